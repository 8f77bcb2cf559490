/*
 * The OCI runtime driver against a fake runtime (a shell script standing in for runc or crun,
 * which keeps a marker file for each container it holds), every behaviour run twice: named
 * fake-runc, the driver runs it detached (`run --detach`, then waits for the init and deletes
 * the container); named crun, in the foreground (`run`, which waits for the init, reports its
 * exit code and deletes its own container). Output capture and streaming, the bounded log tail,
 * exit codes; the run's state machine, every transition of its table and the refusal of every
 * other; and that each way a run fails (the start, timeout, cancel, the runtime killed half
 * way, poll failing) ends in `kill ID KILL` + `delete --force ID` with no container left, or in
 * OBI_ECONTAINER_LEFT when delete fails. Also the default runtime's probe cache: a changed
 * binary (mtime, ctime, size) misses.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/runtime.h"
#include "../../src/builder/runtime_internal.h"
#include "test_helpers.h"

/* poll, failed on demand (this test links with -Wl,--wrap=poll): the next poll after
 * fail_next_poll is set fails with ENOMEM. Only the foreground run polls here. */
int __real_poll(struct pollfd *fds, nfds_t n, int timeout_ms);
int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout_ms);
static bool fail_next_poll;

int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout_ms)
{
    if (fail_next_poll) {
        fail_next_poll = false;
        errno = ENOMEM;
        return -1;
    }
    return __real_poll(fds, n, timeout_ms);
}

/* The fake runtime: `run --detach --pid-file F --bundle B ID` makes $DIR/container-ID (after
 * 0.3 s when B/slow-create exists) and starts B/script in the background as the container's
 * init (its pid in F, as runc writes it; the script starts only once the fake runtime is gone,
 * so the shell can never reap an init that ended first and leave the service an init that is
 * nobody's child, as runc never does) with $KILLED pointing at a marker file that `kill`
 * creates (so a "container" can notice it was killed: the scripts below also stop once their
 * own file is gone, so a test that failed half way leaks no loop past its teardown), and exits 0;
 * it fails instead, leaving the container (a runtime that failed half way), saying what
 * B/start-fails holds when that exists, and kills itself when B/runtime-dies exists. Without
 * --detach (crun's foreground run) it runs the script as its child, writes F (0.2 s later when
 * B/pid-file-late exists, as the command may write before the runtime writes its pid file), waits
 * for it, removes the container and exits with the script's code. `run --detach --bundle B ID`
 * (services) runs the script itself. `kill` fails for a container that does not exist (yet).
 * `delete` removes the container, or fails while $DIR/delete-fails exists. Every call is appended
 * to $DIR/calls; crun's global --cgroup-manager=disabled before the subcommand is skipped. */
static const char FAKE_RUNTIME[] =
    "#!/bin/sh\n"
    "dir=$(dirname \"$0\")\n"
    "echo \"$*\" >> \"$dir/calls\"\n"
    "[ \"$1\" = --cgroup-manager=disabled ] && shift\n"
    "for id; do :; done\n"
    "case \"$1\" in\n"
    "  run) shift; fg=1; [ \"$1\" = --detach ] && { shift; fg=; }; pidfile=\n"
    "       [ \"$1\" = --pid-file ] && { pidfile=$2; shift 2; }\n"
    "       [ -f \"$2/slow-create\" ] && sleep 0.3\n"
    "       touch \"$dir/container-$id\"; export KILLED=\"$dir/killed-$id\"\n"
    "       [ -z \"$pidfile\" ] && exec sh \"$2/script\"\n"
    "       [ -f \"$2/start-fails\" ] && { cat \"$2/start-fails\" >&2; exit 1; }\n"
    "       [ -f \"$2/runtime-dies\" ] && kill -9 $$\n"
    "       if [ -n \"$fg\" ]; then\n"
    "         sh \"$2/script\" & init=$!\n"
    "         [ -f \"$2/pid-file-late\" ] && sleep 0.2\n"
    "         echo $init > \"$pidfile\"; wait $init; code=$?\n"
    "         rm -f \"$dir/container-$id\"; exit $code\n"
    "       fi\n"
    "       (while kill -0 $$ 2>/dev/null; do sleep 0.01; done; exec sh \"$2/script\") &\n"
    "       echo $! > \"$pidfile\"; exit 0 ;;\n"
    "  kill) [ -f \"$dir/container-$2\" ] || { echo \"container $2 does not exist\" >&2; exit 1; "
    "}\n"
    "        touch \"$dir/killed-$2\"; exit 0 ;;\n"
    "  delete) if [ -f \"$dir/delete-fails\" ]; then echo 'cgroup still busy' >&2; exit 1; fi\n"
    "          rm -f \"$dir/container-$id\"; exit 0 ;;\n"
    "  state) if [ -f \"$dir/state\" ]; then cat \"$dir/state\"; "
    "else echo \"container $2 does not exist\" >&2; exit 1; fi ;;\n"
    "esac\n";

typedef struct fixture {
    char *dir;
    char *bundle;
    obi_runtime *runtime;
    bool foreground; /* the fake is named crun: runs are foreground runs */
} fixture;

static int setup_named(void **state, const char *name)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    f->bundle = obi_path_join(f->dir, "bundle");
    f->foreground = !strcmp(name, "crun");
    mkdir(f->bundle, 0755);
    char *path = obi_path_join(f->dir, name);
    obi_write_file(path, FAKE_RUNTIME, strlen(FAKE_RUNTIME), 0755, NULL);
    obi_runtime_new(path, NULL, &f->runtime, NULL);
    free(path);
    *state = f;
    return f->runtime ? 0 : -1;
}

static int setup(void **state)
{
    return setup_named(state, "fake-runc");
}

static int setup_foreground(void **state)
{
    return setup_named(state, "crun");
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

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Output and when its first byte was streamed. */
typedef struct timed_output {
    obi_buf data;
    int64_t first_ms;
} timed_output;

static void collect_timed(const uint8_t *data, size_t len, void *ctx)
{
    timed_output *seen = ctx;
    if (!seen->data.len)
        seen->first_ms = monotonic_ms();
    obi_buf_append(&seen->data, data, len);
}

/* Whether the fake runtime still holds container id. */
static bool container_exists(fixture *f, const char *id)
{
    char name[64];
    snprintf(name, sizeof name, "container-%s", id);
    char *path = obi_path_join(f->dir, name);
    bool exists = access(path, F_OK) == 0;
    free(path);
    return exists;
}

static void make_delete_fail(fixture *f)
{
    char *path = obi_path_join(f->dir, "delete-fails");
    assert_int_equal(obi_write_file(path, "", 0, 0644, NULL), 0);
    free(path);
}

/* An empty marker file in the bundle (start-fails, runtime-dies, slow-create, pid-file-late). */
static void mark_bundle(fixture *f, const char *name)
{
    char *path = obi_path_join(f->bundle, name);
    assert_int_equal(obi_write_file(path, "", 0, 0644, NULL), 0);
    free(path);
}

/* How many times the calls hold needle. */
static size_t count_calls(fixture *f, const char *needle)
{
    char *calls = read_calls(f);
    size_t n = 0;
    for (const char *p = calls; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(calls);
    return n;
}

static void assert_contains(const char *text, const char *needle)
{
    if (!strstr(text, needle))
        print_error("'%s' lacks '%s'\n", text, needle);
    assert_non_null(strstr(text, needle));
}

/* The runtime's calls contain "kill ID KILL" and "delete --force ID". */
static void assert_destroyed(fixture *f, const char *id)
{
    char kill_call[64], delete_call[64];
    snprintf(kill_call, sizeof kill_call, "kill %s KILL", id);
    snprintf(delete_call, sizeof delete_call, "delete --force %s", id);
    char *calls = read_calls(f);
    assert_contains(calls, kill_call);
    assert_contains(calls, delete_call);
    free(calls);
    assert_false(container_exists(f, id));
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
    assert_non_null(strstr(result.log_tail, "to-stdout"));
    assert_non_null(strstr(result.log_tail, "to-stderr"));
    assert_non_null(strstr((char *)streamed.data, "to-stdout"));
    char *calls = read_calls(f);
    assert_non_null(strstr(calls, f->foreground ? "run --pid-file" : "run --detach --pid-file"));
    free(calls);
    obi_run_result_clear(&result);
    obi_buf_free(&streamed);
}

/* A detached container stays until deleted: an init that exits by itself needs the delete, but
 * no kill. A foreground runtime deletes its own container as it exits: no call at all. */
static void test_runtime_clean_exit_deletes_without_a_kill(void **state)
{
    fixture *f = *state;
    write_script(f, "echo done\n");
    obi_run_result result;
    assert_ok(obi_runtime_run(f->runtime, f->bundle, "c1", NULL, &result, err_ptr_));
    assert_int_equal(result.exit_code, 0);
    assert_string_equal(result.log_tail, "done\n");
    char *calls = read_calls(f);
    assert_non_null(strstr(calls, f->foreground ? "run --pid-file" : "run --detach --pid-file"));
    assert_null(strstr(calls, "kill"));
    if (f->foreground)
        assert_null(strstr(calls, "delete"));
    else
        assert_non_null(strstr(calls, "delete --force c1"));
    free(calls);
    assert_false(container_exists(f, "c1"));
    obi_run_result_clear(&result);
}

/* A build that fails by itself (exit 3) is no failure of the run: its exit code, and the
 * container goes as after any exit (foreground: with no call of ours). */
static void test_runtime_failing_command_is_its_exit_code(void **state)
{
    fixture *f = *state;
    write_script(f, "echo failing; exit 3\n");
    obi_run_result result;
    assert_ok(obi_runtime_run(f->runtime, f->bundle, "c17", NULL, &result, err_ptr_));
    assert_int_equal(result.exit_code, 3);
    assert_string_equal(result.log_tail, "failing\n");
    assert_int_equal(count_calls(f, "kill"), 0);
    assert_int_equal(count_calls(f, "delete"), f->foreground ? 0 : 1);
    assert_false(container_exists(f, "c17"));
    obi_run_result_clear(&result);
}

/* Foreground: what the command writes before the runtime has written its pid file is held
 * (it could be the runtime's own error) and flows once the file is there, while the command
 * still runs, in order, nothing lost. */
static void test_runtime_output_before_the_pid_file_is_the_builds(void **state)
{
    fixture *f = *state;
    mark_bundle(f, "pid-file-late");
    write_script(f, "echo early; echo early-err >&2; sleep 0.8; echo late\n");
    timed_output seen = {OBI_BUF_INIT, 0};
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.on_output = collect_timed;
    opts.output_ctx = &seen;
    obi_run_result result;
    assert_ok(obi_runtime_run(f->runtime, f->bundle, "c18", &opts, &result, err_ptr_));
    int64_t ended = monotonic_ms();
    assert_int_equal(result.exit_code, 0);
    assert_int_equal(obi_buf_append(&seen.data, "", 1), 0);
    assert_string_equal((char *)seen.data.data, "early\nearly-err\nlate\n");
    assert_string_equal(result.log_tail, "early\nearly-err\nlate\n");
    /* Streamed once the pid file came (0.2 s), not held until the next line (0.8 s later). */
    assert_true(ended - seen.first_ms >= 400);
    obi_run_result_clear(&result);
    obi_buf_free(&seen.data);
}

/* Cancelled while the runtime is still making the container (so `kill` finds none): the kill
 * is sent again until it does, and the run ends long before the 10 s grace. Foreground, the
 * runtime would otherwise go on to start the command and wait for it. */
static void test_runtime_cancel_while_creating_kills_what_it_made(void **state)
{
    fixture *f = *state;
    mark_bundle(f, "slow-create");
    write_script(f, "while [ ! -f \"$KILLED\" ] && [ -f \"$0\" ]; do sleep 0.05; done; exit 137\n");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.cancel_fd = fds[0];
    obi_run_result result;
    obi_error *err = NULL;
    int64_t started = monotonic_ms();
    assert_fails_with(err, obi_runtime_run(f->runtime, f->bundle, "c19", &opts, &result, &err),
                      -ECANCELED, "interrupted; container c19 killed and removed");
    assert_true(monotonic_ms() - started < 5000);
    assert_true(count_calls(f, "kill c19 KILL") >= 2);
    assert_destroyed(f, "c19");
    close(fds[0]);
    close(fds[1]);
}

/* The build's stdout and stderr come through one pipe, in the order written. */
static void test_runtime_run_keeps_stdout_and_stderr_in_order(void **state)
{
    fixture *f = *state;
    write_script(f, "echo out1; echo err1 >&2; echo out2; echo err2 >&2\n");
    obi_buf streamed = OBI_BUF_INIT;
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.on_output = collect;
    opts.output_ctx = &streamed;
    obi_run_result result;
    assert_ok(obi_runtime_run(f->runtime, f->bundle, "c15", &opts, &result, err_ptr_));
    assert_int_equal(obi_buf_append(&streamed, "", 1), 0);
    assert_string_equal((char *)streamed.data, "out1\nerr1\nout2\nerr2\n");
    assert_string_equal(result.log_tail, "out1\nerr1\nout2\nerr2\n");
    obi_run_result_clear(&result);
    obi_buf_free(&streamed);
}

/* A runtime that fails half way through creating the container (non-zero, the container still
 * there) could not start the command: said once, in the error only (nothing streamed as if it
 * were the build's log), runc's logrus line unquoted, and the container deleted. */
static void test_runtime_that_cannot_start_the_command_says_so_once(void **state)
{
    fixture *f = *state;
    write_script(f, "echo never-ran\n");
    char *fails = obi_path_join(f->bundle, "start-fails");
    const char *said = "time=\"2026-01-01T00:00:00Z\" level=error msg=\"runc run failed: exec: "
                       "\\\"/nix/store/x\\\": no such file or directory\"\n";
    assert_int_equal(obi_write_file(fails, said, strlen(said), 0644, NULL), 0);
    free(fails);
    obi_buf streamed = OBI_BUF_INIT;
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.on_output = collect;
    opts.output_ctx = &streamed;
    obi_run_result result;
    obi_error *err = NULL;
    assert_fails_with(err, obi_runtime_run(f->runtime, f->bundle, "c7", &opts, &result, &err),
                      OBI_ERUNTIME_START,
                      "could not start the command (it exited with 1): runc run failed: exec: "
                      "\"/nix/store/x\": no such file or directory");
    assert_int_equal(streamed.len, 0);
    assert_destroyed(f, "c7");
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
    write_script(f, "echo started; while [ ! -f \"$KILLED\" ] && [ -f \"$0\" ]; do sleep 0.05; "
                    "done; exit 137\n");
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.timeout_seconds = 1;
    obi_run_result result;
    obi_error *err = NULL;
    assert_int_equal(obi_runtime_run(f->runtime, f->bundle, "c3", &opts, &result, &err),
                     -ETIMEDOUT);
    assert_contains(err->message, "timed out after 1 s; container c3 killed and removed");
    assert_contains(err->message, "log tail:\nstarted");
    obi_error_free(err);
    assert_destroyed(f, "c3");
}

static void test_runtime_cancel_fd_kills_and_deletes_the_container(void **state)
{
    fixture *f = *state;
    write_script(f, "while [ ! -f \"$KILLED\" ] && [ -f \"$0\" ]; do sleep 0.05; done; exit 137\n");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.cancel_fd = fds[0];
    obi_run_result result;
    obi_error *err = NULL;
    assert_fails_with(err, obi_runtime_run(f->runtime, f->bundle, "c4", &opts, &result, &err),
                      -ECANCELED, "interrupted; container c4 killed and removed");
    assert_destroyed(f, "c4");
    close(fds[0]);
    close(fds[1]);
}

/* The caller's work while the container starts (while_starting) runs once, after the runtime
 * was spawned; when it fails, the run fails with its error and the container is killed and
 * removed, as on a cancel. */
static int count_aside(void *ctx, obi_error **err)
{
    (void)err;
    (*(int *)ctx)++;
    return 0;
}

static int fail_aside(void *ctx, obi_error **err)
{
    (*(int *)ctx)++;
    return obi_error_set(err, -EIO, "open the store: disk on fire");
}

static void test_runtime_while_starting_runs_once_and_its_failure_kills(void **state)
{
    fixture *f = *state;
    write_script(f, "echo ran\n");
    int calls = 0;
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.while_starting = count_aside;
    opts.while_starting_ctx = &calls;
    obi_run_result result;
    assert_ok(obi_runtime_run(f->runtime, f->bundle, "c30", &opts, &result, err_ptr_));
    assert_int_equal(calls, 1);
    assert_int_equal(result.exit_code, 0);
    obi_run_result_clear(&result);

    write_script(f, "while [ ! -f \"$KILLED\" ] && [ -f \"$0\" ]; do sleep 0.05; done; exit 137\n");
    calls = 0;
    opts.while_starting = fail_aside;
    obi_error *err = NULL;
    assert_fails_with(err, obi_runtime_run(f->runtime, f->bundle, "c31", &opts, &result, &err),
                      -EIO, "open the store: disk on fire; container c31 killed and removed");
    assert_int_equal(calls, 1);
    assert_destroyed(f, "c31");
}

/* A cancel fd whose writer went away without writing never cancels (and is not polled on). */
static void test_runtime_cancel_fd_hung_up_does_not_cancel(void **state)
{
    fixture *f = *state;
    write_script(f, "sleep 0.3; echo finished\n");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    close(fds[1]);
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.cancel_fd = fds[0];
    obi_run_result result;
    assert_ok(obi_runtime_run(f->runtime, f->bundle, "c8", &opts, &result, err_ptr_));
    assert_string_equal(result.log_tail, "finished\n");
    obi_run_result_clear(&result);
    close(fds[0]);
}

/* The runtime killed while the container runs (it holds the output pipe and lives on): the
 * run does not wait for it but kills and deletes it. */
static void test_runtime_killed_runtime_has_its_container_removed(void **state)
{
    fixture *f = *state;
    write_script(f, "echo never-ran\n");
    mark_bundle(f, "runtime-dies");
    obi_run_result result;
    obi_error *err = NULL;
    assert_fails_with(err, obi_runtime_run(f->runtime, f->bundle, "c9", NULL, &result, &err), -EIO,
                      "died of signal 9; container c9 killed and removed");
    assert_destroyed(f, "c9");
}

/* An init that dies of a signal is the build's exit code (128+N), as runc reported it. */
static void test_runtime_init_killed_by_a_signal_is_its_exit_code(void **state)
{
    fixture *f = *state;
    write_script(f, "echo started; kill -9 $$\n");
    obi_run_result result;
    assert_ok(obi_runtime_run(f->runtime, f->bundle, "c16", NULL, &result, err_ptr_));
    assert_int_equal(result.exit_code, 137);
    obi_run_result_clear(&result);
    assert_false(container_exists(f, "c16"));
}

static void fail_poll_once_started(const uint8_t *data, size_t len, void *ctx)
{
    (void)ctx;
    if (memmem(data, len, "started", 7))
        fail_next_poll = true;
}

/* poll failing mid-run: before, the loop broke, killed only the runtime process and returned
 * 0 with the container still there. */
static void test_runtime_poll_failure_kills_and_deletes_the_container(void **state)
{
    fixture *f = *state;
    write_script(f, "echo started; while [ ! -f \"$KILLED\" ] && [ -f \"$0\" ]; do sleep 0.05; "
                    "done; exit 137\n");
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.on_output = fail_poll_once_started;
    obi_run_result result;
    obi_error *err = NULL;
    assert_fails_with(err, obi_runtime_run(f->runtime, f->bundle, "c10", &opts, &result, &err),
                      -ENOMEM, "poll on the output of container c10");
    assert_false(fail_next_poll);
    assert_destroyed(f, "c10");
}

/* The runtime exits 0 but something it left holds the output open: the run waits for the
 * output (a normal run's last lines) until the deadline, then kills and deletes as usual. */
static void test_runtime_output_held_after_exit_ends_at_the_deadline(void **state)
{
    fixture *f = *state;
    write_script(
        f,
        "(while [ ! -f \"$KILLED\" ] && [ -f \"$0\" ]; do sleep 0.05; done; echo holder-gone) &\n"
        "echo runtime-done\n");
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.timeout_seconds = 1;
    obi_run_result result;
    obi_error *err = NULL;
    assert_int_equal(obi_runtime_run(f->runtime, f->bundle, "c14", &opts, &result, &err),
                     -ETIMEDOUT);
    assert_contains(err->message, "runtime-done");
    obi_error_free(err);
    assert_destroyed(f, "c14");
}

/* kill + delete --force failing (three times): the run says the container may still exist,
 * with a code of its own, and keeps the reason the run failed in the first place. Detached, a
 * command that exited 3 leaves its container to delete; a foreground runtime deleted it itself,
 * so there the container that stays is one the runtime left failing half way. */
static void test_runtime_delete_failing_reports_the_container_left(void **state)
{
    fixture *f = *state;
    make_delete_fail(f);
    write_script(f, "exit 3\n");
    if (f->foreground) {
        char *fails = obi_path_join(f->bundle, "start-fails");
        assert_int_equal(obi_write_file(fails, "mount refused\n", 14, 0644, NULL), 0);
        free(fails);
    }
    obi_run_result result;
    obi_error *err = NULL;
    assert_int_equal(obi_runtime_run(f->runtime, f->bundle, "c11", NULL, &result, &err),
                     OBI_ECONTAINER_LEFT);
    assert_contains(err->message, f->foreground ? "mount refused" : "exit code 3");
    assert_contains(err->message, "container c11 could not be removed and may still exist");
    assert_contains(err->message, "cgroup still busy");
    obi_error_free(err);
    assert_true(container_exists(f, "c11"));
}

static void test_runtime_timeout_with_delete_failing_keeps_both_reasons(void **state)
{
    fixture *f = *state;
    make_delete_fail(f);
    write_script(f, "while [ ! -f \"$KILLED\" ] && [ -f \"$0\" ]; do sleep 0.05; done; exit 137\n");
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.timeout_seconds = 1;
    obi_run_result result;
    obi_error *err = NULL;
    assert_int_equal(obi_runtime_run(f->runtime, f->bundle, "c12", &opts, &result, &err),
                     OBI_ECONTAINER_LEFT);
    assert_contains(err->message, "timed out after 1 s");
    assert_contains(err->message, "but container c12 could not be removed");
    obi_error_free(err);
}

/* A runtime that cannot be executed: no container was made, so none is killed or deleted. */
static void test_runtime_spawn_failure_makes_no_cleanup_calls(void **state)
{
    fixture *f = *state;
    assert_int_equal(chmod(obi_runtime_path(f->runtime), 0644), 0);
    obi_run_result result;
    obi_error *err = NULL;
    assert_true(obi_runtime_run(f->runtime, f->bundle, "c13", NULL, &result, &err) < 0);
    assert_int_not_equal(err->code, OBI_ECONTAINER_LEFT);
    assert_contains(err->message, obi_runtime_path(f->runtime));
    obi_error_free(err);
    char *calls = read_calls(f);
    assert_string_equal(calls, "");
    free(calls);
}

/* The run's whole transition table, as the diagram in runtime.c draws it. */
static const struct {
    obi_run_state from;
    obi_run_event event;
    obi_run_state to;
} legal[] = {
    {OBI_RUN_STARTING, OBI_RUN_EV_STARTED, OBI_RUN_RUNNING},
    {OBI_RUN_STARTING, OBI_RUN_EV_SPAWN_FAILED, OBI_RUN_DONE},
    {OBI_RUN_RUNNING, OBI_RUN_EV_EXITED, OBI_RUN_DELETING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_EXITED_FAILING, OBI_RUN_DELETING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_RUNTIME_DIED, OBI_RUN_DELETING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_TIMEOUT, OBI_RUN_KILLING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_CANCEL, OBI_RUN_KILLING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_IO_FAILED, OBI_RUN_KILLING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_ASIDE_FAILED, OBI_RUN_KILLING},
    {OBI_RUN_KILLING, OBI_RUN_EV_RUNTIME_GONE, OBI_RUN_DELETING},
    {OBI_RUN_KILLING, OBI_RUN_EV_GRACE_OVER, OBI_RUN_DELETING},
    {OBI_RUN_KILLING, OBI_RUN_EV_IO_FAILED, OBI_RUN_DELETING},
    {OBI_RUN_DELETING, OBI_RUN_EV_DESTROYED, OBI_RUN_DONE},
    {OBI_RUN_DELETING, OBI_RUN_EV_DESTROY_FAILED, OBI_RUN_DONE},
};

/* Every (state, event) pair: the legal ones move where the table says, every other is refused
 * with -EINVAL and a message naming the container, the state and the event. Every state but
 * done leads on to done or deleting, so no failure can skip the delete. */
static void test_runtime_run_transitions_are_the_table_and_no_other(void **state)
{
    (void)state;
    size_t n_legal = 0;
    for (obi_run_state from = 0; from < OBI_RUN_N_STATES; from++) {
        for (obi_run_event event = 0; event < OBI_RUN_N_EVENTS; event++) {
            const obi_run_state *expected = NULL;
            for (size_t i = 0; i < sizeof legal / sizeof legal[0]; i++)
                if (legal[i].from == from && legal[i].event == event)
                    expected = &legal[i].to;
            obi_run_state to = OBI_RUN_N_STATES;
            obi_error *err = NULL;
            int r = obi_run_transition("c0", from, event, &to, &err);
            if (expected) {
                assert_int_equal(r, 0);
                assert_int_equal(to, *expected);
                assert_null(err);
                n_legal++;
                continue;
            }
            assert_int_equal(r, -EINVAL);
            assert_int_equal(to, OBI_RUN_N_STATES); /* untouched */
            char needle[128];
            snprintf(needle, sizeof needle, "container c0: event '%s' is not allowed while %s",
                     obi_run_event_name(event), obi_run_state_name(from));
            assert_contains(err->message, needle);
            obi_error_free(err);
        }
    }
    assert_int_equal(n_legal, sizeof legal / sizeof legal[0]);
}

static void test_runtime_refused_transition_names_what_is_allowed(void **state)
{
    (void)state;
    obi_run_state to;
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_run_transition("b-42", OBI_RUN_DELETING, OBI_RUN_EV_TIMEOUT, &to, &err), -EINVAL,
        "container b-42: event 'timeout' is not allowed while deleting (allowed: "
        "'destroyed', 'destroy failed')");
    assert_fails_with(err, obi_run_transition("b-42", OBI_RUN_DONE, OBI_RUN_EV_STARTED, &to, &err),
                      -EINVAL, "is not allowed while done (no event is allowed)");
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

#define RUNTIME_TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
/* A behaviour of every run: once detached (fake-runc), once in the foreground (crun). */
#define RUN_TESTS(f)                                                                               \
    {"detached: " #f, f, setup, teardown, NULL},                                                   \
    {                                                                                              \
        "foreground: " #f, f, setup_foreground, teardown, NULL                                     \
    }

/* A runtime asked for no cgroups: crun gets --cgroup-manager=disabled before the subcommand of
 * every call (run; kill and delete --force of a timed out run; state), so that none of them
 * makes or looks for a cgroup; runc cannot, keeps its cgroups and gets no such option. */
static void test_runtime_without_cgroups_tells_crun_on_every_call(void **state)
{
    fixture *f = *state;
    assert_true(obi_runtime_uses_cgroups(f->runtime));
    bool uses = obi_runtime_set_cgroups(f->runtime, false);
    assert_int_equal(uses, !f->foreground); /* only the fake named crun drops them */
    assert_int_equal(obi_runtime_uses_cgroups(f->runtime), uses);
    write_script(f, "while [ ! -f \"$KILLED\" ] && [ -f \"$0\" ]; do sleep 0.05; done; exit 137\n");
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.timeout_seconds = 1;
    obi_run_result result;
    obi_error *err = NULL;
    assert_int_equal(obi_runtime_run(f->runtime, f->bundle, "c9", &opts, &result, &err),
                     -ETIMEDOUT);
    obi_error_free(err);
    assert_destroyed(f, "c9");
    json_t *ignored = NULL;
    err = NULL;
    assert_int_equal(obi_runtime_state(f->runtime, "c9", &ignored, &err), -ENOENT);
    obi_error_free(err);
    char *calls = read_calls(f);
    const char *prefix = f->foreground ? "--cgroup-manager=disabled " : "";
    static const char *const SUBCOMMANDS[] = {"run ", "kill c9 KILL", "delete --force c9",
                                              "state c9"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(SUBCOMMANDS); i++) {
        char line[128];
        snprintf(line, sizeof line, "\n%s%s", prefix, SUBCOMMANDS[i]);
        char *with_newline = NULL;
        assert_true(asprintf(&with_newline, "\n%s", calls) > 0);
        assert_contains(with_newline, line);
        free(with_newline);
    }
    assert_int_equal(strstr(calls, "--cgroup-manager") != NULL, f->foreground);
    free(calls);
    /* Asked for them again: no option. */
    assert_true(obi_runtime_set_cgroups(f->runtime, true));
    assert_true(obi_runtime_uses_cgroups(f->runtime));
}

/* ---- the default runtime's probe cache ---- */

static void probe_key_of(const char *path, bool rootless, char key[OBI_RUNTIME_PROBE_KEY_LEN + 1])
{
    assert_int_equal(obi_runtime_probe_key(path, rootless, key, NULL), 0);
    assert_int_equal(strlen(key), OBI_RUNTIME_PROBE_KEY_LEN);
}

static void test_runtime_probe_key_changes_with_the_binary(void **state)
{
    fixture *f = *state;
    char *binary = strdup(obi_runtime_path(f->runtime));
    char first[OBI_RUNTIME_PROBE_KEY_LEN + 1], again[OBI_RUNTIME_PROBE_KEY_LEN + 1],
        other[OBI_RUNTIME_PROBE_KEY_LEN + 1];
    probe_key_of(binary, false, first);
    probe_key_of(binary, false, again);
    assert_string_equal(first, again);
    probe_key_of(binary, true, other);
    assert_string_not_equal(first, other); /* rootless is probed on its own */
    /* A new mtime (same size and contents) misses. */
    struct timespec times[2] = {{0, UTIME_OMIT}, {12345, 678}};
    assert_int_equal(utimensat(AT_FDCWD, binary, times, 0), 0);
    probe_key_of(binary, false, other);
    assert_string_not_equal(first, other);
    /* Only the ctime changes (mtime put back): misses too. */
    char after_mtime[OBI_RUNTIME_PROBE_KEY_LEN + 1];
    strcpy(after_mtime, other);
    assert_int_equal(chmod(binary, 0700), 0);
    assert_int_equal(utimensat(AT_FDCWD, binary, times, 0), 0);
    probe_key_of(binary, false, other);
    assert_string_not_equal(after_mtime, other);
    /* Another size misses. */
    strcpy(after_mtime, other);
    int fd = open(binary, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\n", 1), 1);
    close(fd);
    assert_int_equal(utimensat(AT_FDCWD, binary, times, 0), 0);
    probe_key_of(binary, false, other);
    assert_string_not_equal(after_mtime, other);
    obi_error *err = NULL;
    assert_int_equal(obi_runtime_probe_key("/nonexistent/crun", false, other, &err), -ENOENT);
    assert_contains(err->message, "/nonexistent/crun");
    obi_error_free(err);
    free(binary);
}

static void test_runtime_probe_cache_keeps_what_was_found(void **state)
{
    fixture *f = *state;
    char *dir = obi_path_join(f->dir, "probe");
    char *why = NULL;
    assert_int_equal(obi_runtime_probe_cache_get(dir, "aaaa", &why, NULL), 0); /* no dir yet */
    assert_int_equal(obi_runtime_probe_cache_put(dir, "aaaa", NULL, NULL), 0);
    assert_int_equal(obi_runtime_probe_cache_put(dir, "bbbb", "cgroups\nin hybrid mode", NULL), 0);
    assert_int_equal(obi_runtime_probe_cache_get(dir, "aaaa", &why, NULL), 1);
    assert_null(why);
    assert_int_equal(obi_runtime_probe_cache_get(dir, "bbbb", &why, NULL), 2);
    assert_string_equal(why, "cgroups in hybrid mode");
    free(why);
    assert_int_equal(obi_runtime_probe_cache_get(dir, "cccc", NULL, NULL), 0);
    /* A file that is not a probe's (cut short, or someone else's) is probed again. */
    char *junk = obi_path_join(dir, "dddd");
    assert_int_equal(obi_write_file(junk, "o", 1, 0600, NULL), 0);
    assert_int_equal(obi_runtime_probe_cache_get(dir, "dddd", NULL, NULL), 0);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    free(junk);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        RUN_TESTS(test_runtime_run_captures_output_and_exit_code),
        RUN_TESTS(test_runtime_clean_exit_deletes_without_a_kill),
        RUN_TESTS(test_runtime_failing_command_is_its_exit_code),
        RUN_TESTS(test_runtime_run_keeps_stdout_and_stderr_in_order),
        RUN_TESTS(test_runtime_that_cannot_start_the_command_says_so_once),
        RUN_TESTS(test_runtime_init_killed_by_a_signal_is_its_exit_code),
        RUN_TESTS(test_runtime_log_tail_keeps_only_the_last_bytes),
        RUN_TESTS(test_runtime_timeout_kills_and_deletes_the_container),
        RUN_TESTS(test_runtime_cancel_fd_kills_and_deletes_the_container),
        RUN_TESTS(test_runtime_cancel_while_creating_kills_what_it_made),
        RUN_TESTS(test_runtime_cancel_fd_hung_up_does_not_cancel),
        RUN_TESTS(test_runtime_while_starting_runs_once_and_its_failure_kills),
        RUN_TESTS(test_runtime_killed_runtime_has_its_container_removed),
        RUN_TESTS(test_runtime_poll_failure_kills_and_deletes_the_container),
        RUN_TESTS(test_runtime_output_held_after_exit_ends_at_the_deadline),
        RUN_TESTS(test_runtime_delete_failing_reports_the_container_left),
        RUN_TESTS(test_runtime_timeout_with_delete_failing_keeps_both_reasons),
        RUN_TESTS(test_runtime_spawn_failure_makes_no_cleanup_calls),
        RUN_TESTS(test_runtime_without_cgroups_tells_crun_on_every_call),
        cmocka_unit_test_setup_teardown(test_runtime_output_before_the_pid_file_is_the_builds,
                                        setup_foreground, teardown),
        cmocka_unit_test(test_runtime_run_transitions_are_the_table_and_no_other),
        cmocka_unit_test(test_runtime_refused_transition_names_what_is_allowed),
        cmocka_unit_test(test_runtime_not_found_says_what_to_install),
        RUNTIME_TEST(test_runtime_state_of_missing_container_is_enoent),
        RUNTIME_TEST(test_runtime_detached_failure_cleans_up_and_reports_the_log),
        RUNTIME_TEST(test_runtime_probe_key_changes_with_the_binary),
        RUNTIME_TEST(test_runtime_probe_cache_keeps_what_was_found),
    };
    return cmocka_run_group_tests_name("runtime", tests, NULL, NULL);
}
