/*
 * The local OCI build service against a fake runtime (a script standing in for runc that
 * writes the outputs into the bundle's scratch dir): at most max_builds builds run at once,
 * outputs are ingested with their needles, failures leave no bundle behind, and one build's
 * own cancel fd and log callback (obi_build_call) concern that build only.
 * Needs root (scratch dirs are chowned to the build user's host ids in an id slot of the
 * ocibuild range, which scripts/install-deps.sh makes).
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/ingest.h"
#include "ocibuild/oci_build.h"
#include "ocibuild/root_pool.h"
#include "ocibuild/store.h"
#include "ocibuild/url.h"
#include "test_helpers.h"

/* run --detach --pid-file F --bundle B ID: starts the "container" in the background (its pid
 * in F, as runc writes the init's) and exits; the container marks itself running (to measure
 * concurrency), runs $FAKE_SCRIPT with $SCRATCH set to the bundle's only scratch dir, and
 * unmarks itself. kill ID SIGNAL kills the script, as runc kills the container. */
static const char FAKE_RUNTIME[] =
    "#!/bin/sh\n"
    "dir=$(dirname \"$0\")\n"
    "case \"$1\" in\n"
    "  run) pidfile=\"$4\"; b=\"$6\"; id=\"$7\"; SCRATCH=$(echo \"$b\"/scratch/*); export SCRATCH\n"
    "       (mkdir \"$dir/running.$id\"; ls -d \"$dir\"/running.* | wc -l >> \"$dir/concurrency\"\n"
    "        sh -c \"$FAKE_SCRIPT\" & echo $! > \"$dir/pid.$id\"; wait $!; rc=$?\n"
    "        rmdir \"$dir/running.$id\"; exit $rc) &\n"
    "       echo $! > \"$pidfile\"; exit 0 ;;\n"
    "  kill) kill -9 \"$(cat \"$dir/pid.$2\")\" 2>/dev/null; exit 0 ;;\n"
    "  *) exit 0 ;;\n"
    "esac\n";

typedef struct fixture {
    char *dir;
    char *bundles;
    obi_store *store;
    obi_build_service *service;
} fixture;

static int setup_with(void **state, unsigned max_builds, bool root_pool)
{
    if (geteuid() != 0) {
        print_message("!!! test_oci_build needs root (chown to the build user); skipping\n");
        skip();
    }
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    /* Searchable by others: a build's container root, a host id of its id slot, reaches the
     * bundles below (the service checks it). */
    chmod(f->dir, 0711);
    f->bundles = obi_path_join(f->dir, "bundles");
    char *runtime = obi_path_join(f->dir, "fake-runc");
    obi_write_file(runtime, FAKE_RUNTIME, strlen(FAKE_RUNTIME), 0755, NULL);
    obi_store_open("memory://", "memory://", &f->store, NULL);
    obi_oci_build_options opts = OBI_OCI_BUILD_OPTIONS_INIT;
    opts.bundle_root = f->bundles;
    opts.runtime = runtime;
    opts.max_builds = max_builds;
    opts.disable_root_pool = !root_pool;
    int r = obi_oci_build_service_new(&opts, f->store, &f->service, NULL);
    free(runtime);
    *state = f;
    return r;
}

static int setup_two(void **state)
{
    return setup_with(state, 2, true);
}

static int setup_one(void **state)
{
    return setup_with(state, 1, true);
}

static int setup_without_root_pool(void **state)
{
    return setup_with(state, 2, false);
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (!f)
        return 0;
    obi_build_service_free(f->service);
    obi_store_close(f->store);
    free(f->bundles);
    obi_test_tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static obi_build_request *simple_request(void)
{
    json_t *json =
        json_pack("{s:[s], s:s, s:[s], s:s, s:[s], s:[s, s]}", "command_args", "x", "working_dir",
                  "build", "scratch_paths", "out", "inputs_dir", "", "outputs", "out/result",
                  "refscan_needles", "needle-one", "needle-two");
    obi_build_request *req = NULL;
    obi_build_request_from_json(json, &req, NULL);
    json_decref(json);
    return req;
}

/* Once the builds' leftovers, removed after their answers, are gone. */
static bool bundle_root_is_empty(const fixture *f)
{
    obi_oci_build_service_settle(f->service);
    DIR *d = opendir(f->bundles);
    if (!d)
        return true;
    struct dirent *de;
    bool empty = true;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            empty = false;
    closedir(d);
    return empty;
}

static void test_oci_build_ingests_outputs_with_needles(void **state)
{
    fixture *f = *state;
    setenv("FAKE_SCRIPT",
           "mkdir \"$SCRATCH/result\" && echo has needle-two > \"$SCRATCH/result/f\"", 1);
    obi_build_request *req = simple_request();
    obi_build *build = NULL;
    assert_ok(obi_build_service_do_build(f->service, req, &build, err_ptr_));
    assert_int_equal(build->n_outputs, 1);
    assert_int_equal(build->outputs[0].kind, OBI_NODE_DIRECTORY);
    assert_string_equal((char *)build->outputs[0].name.data, "result");
    assert_int_equal(build->outputs_needles[0].n_needles, 1);
    assert_int_equal(build->outputs_needles[0].needles[0], 1);
    assert_true(bundle_root_is_empty(f));
    obi_build_free(build);
    obi_build_request_free(req);
}

static void test_oci_build_failure_reports_exit_code_and_tail_and_cleans_up(void **state)
{
    fixture *f = *state;
    setenv("FAKE_SCRIPT", "echo the-reason >&2; exit 3", 1);
    obi_build_request *req = simple_request();
    obi_build *build = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_service_do_build(f->service, req, &build, &err),
                      OBI_EBUILD_FAILED, "exit code 3");
    setenv("FAKE_SCRIPT", "echo the-reason >&2; exit 3", 1);
    assert_fails_with(err, obi_build_service_do_build(f->service, req, &build, &err),
                      OBI_EBUILD_FAILED, "the-reason");
    setenv("FAKE_SCRIPT", "true", 1);
    assert_fails_with(err, obi_build_service_do_build(f->service, req, &build, &err),
                      OBI_EBUILD_FAILED, "did not produce output 0 \"/out/result\"");
    assert_null(build);
    assert_true(bundle_root_is_empty(f));
    obi_build_request_free(req);
}

static void test_oci_build_invalid_request_touches_nothing(void **state)
{
    fixture *f = *state;
    obi_build_request *req = simple_request();
    free(req->outputs[0]);
    req->outputs[0] = strdup("elsewhere/result");
    obi_build *build = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_service_do_build(f->service, req, &build, &err), -EINVAL,
                      "outputs[0]");
    struct stat st;
    char *concurrency = obi_path_join(f->dir, "concurrency");
    assert_int_equal(stat(concurrency, &st), -1); /* the runtime was never called */
    free(concurrency);
    assert_true(bundle_root_is_empty(f));
    obi_build_request_free(req);
}

typedef struct build_thread {
    fixture *f;
    int result;
} build_thread;

static void *run_one(void *arg)
{
    build_thread *t = arg;
    obi_build_request *req = simple_request();
    obi_build *build = NULL;
    obi_error *err = NULL;
    t->result = obi_build_service_do_build(t->f->service, req, &build, &err);
    obi_error_free(err);
    obi_build_free(build);
    obi_build_request_free(req);
    return NULL;
}

static void test_oci_build_runs_at_most_max_builds_at_once(void **state)
{
    fixture *f = *state;
    setenv("FAKE_SCRIPT", "sleep 0.3; mkdir \"$SCRATCH/result\"", 1);
    enum { N = 6 };
    pthread_t threads[N];
    build_thread args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (build_thread){f, -1};
        pthread_create(&threads[i], NULL, run_one, &args[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(args[i].result, 0);
    }
    char *path = obi_path_join(f->dir, "concurrency"), *text = NULL;
    assert_ok(obi_read_file(path, 4096, &text, NULL, err_ptr_));
    int max = 0, lines = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), lines++)
        if (atoi(line) > max)
            max = atoi(line);
    assert_int_equal(lines, N);
    assert_true(max <= 2);
    assert_int_equal(max, 2); /* and the limit is actually used */
    free(text);
    free(path);
    assert_true(bundle_root_is_empty(f));
}

/* ---- one build's own options (obi_build_call) ---- */

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

typedef struct call_thread {
    fixture *f;
    int cancel_fd; /* -1: none */
    int result;
    double seconds;
    struct timespec ended; /* CLOCK_MONOTONIC when the call returned */
    char message[256];
} call_thread;

static void *run_call(void *arg)
{
    call_thread *t = arg;
    obi_build_request *req = simple_request();
    obi_build *build = NULL;
    obi_error *err = NULL;
    obi_build_call call = OBI_BUILD_CALL_INIT;
    call.cancel_fd = t->cancel_fd;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    t->result = obi_build_service_do_build_call(t->f->service, req, &call, &build, &err);
    t->seconds = seconds_since(&start);
    clock_gettime(CLOCK_MONOTONIC, &t->ended);
    snprintf(t->message, sizeof t->message, "%s", err ? err->message : "");
    obi_error_free(err);
    obi_build_free(build);
    obi_build_request_free(req);
    return NULL;
}

static void test_oci_build_call_cancel_fd_stops_that_build_only(void **state)
{
    fixture *f = *state;
    /* The first build to start takes the marker and sleeps; the other finishes at once. */
    char *script = NULL;
    assert_true(asprintf(&script,
                         "if mkdir %s/slow-taken 2>/dev/null; then sleep 30; fi; "
                         "mkdir \"$SCRATCH/result\"",
                         f->dir) > 0);
    setenv("FAKE_SCRIPT", script, 1);
    free(script);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    call_thread slow = {.f = f, .cancel_fd = fds[0], .result = -1};
    pthread_t slow_thread;
    pthread_create(&slow_thread, NULL, run_call, &slow);
    usleep(500 * 1000);
    call_thread quick = {.f = f, .cancel_fd = -1, .result = -1};
    pthread_t quick_thread;
    pthread_create(&quick_thread, NULL, run_call, &quick);
    assert_int_equal(write(fds[1], "x", 1), 1);
    pthread_join(slow_thread, NULL);
    pthread_join(quick_thread, NULL);
    assert_int_equal(slow.result, -ECANCELED);
    assert_true(slow.seconds < 5); /* not the script's 30 s */
    assert_int_equal(quick.result, 0);
    assert_true(bundle_root_is_empty(f));
    close(fds[0]);
    close(fds[1]);
}

static void test_oci_build_cancelled_while_waiting_gives_up_its_turn(void **state)
{
    fixture *f = *state; /* one slot */
    setenv("FAKE_SCRIPT", "sleep 2; mkdir \"$SCRATCH/result\"", 1);
    call_thread first = {.f = f, .cancel_fd = -1, .result = -1};
    pthread_t first_thread;
    pthread_create(&first_thread, NULL, run_call, &first);
    usleep(300 * 1000);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    call_thread waiting = {.f = f, .cancel_fd = fds[0], .result = -1};
    pthread_t waiting_thread;
    pthread_create(&waiting_thread, NULL, run_call, &waiting);
    usleep(300 * 1000);
    assert_int_equal(write(fds[1], "x", 1), 1);
    /* Both threads end before anything is asserted: a failed assertion leaves the test at
     * once, and the teardown must not free the service under a build still running. */
    pthread_join(waiting_thread, NULL);
    pthread_join(first_thread, NULL);
    assert_int_equal(waiting.result, -ECANCELED);
    assert_non_null(strstr(waiting.message, "waiting for a slot"));
    /* It was cancelled while the first build still held the slot (however slow the host). */
    assert_true(waiting.ended.tv_sec < first.ended.tv_sec ||
                (waiting.ended.tv_sec == first.ended.tv_sec &&
                 waiting.ended.tv_nsec < first.ended.tv_nsec));
    assert_int_equal(first.result, 0);
    assert_true(bundle_root_is_empty(f));
    close(fds[0]);
    close(fds[1]);
}

static void collect_output(const uint8_t *data, size_t len, void *ctx)
{
    obi_buf_append(ctx, data, len);
}

static void test_oci_build_call_output_gets_that_builds_log(void **state)
{
    fixture *f = *state;
    setenv("FAKE_SCRIPT", "echo hello-from-this-build; mkdir \"$SCRATCH/result\"", 1);
    obi_build_request *req = simple_request();
    obi_build *build = NULL;
    cleanup_buf obi_buf log = OBI_BUF_INIT;
    obi_build_call call = OBI_BUILD_CALL_INIT;
    call.on_output = collect_output;
    call.output_ctx = &log;
    assert_ok(obi_build_service_do_build_call(f->service, req, &call, &build, err_ptr_));
    obi_buf_append(&log, "", 1);
    assert_non_null(strstr((const char *)log.data, "hello-from-this-build"));
    obi_build_free(build);
    obi_build_request_free(req);
}

/* ---- root skeletons (root_pool.h) ---- */

/* Pool entries that are root skeletons (they hold etc/), or else bundle skeletons (bundle.h:
 * the bundle directory with nothing but empty scratch/ and inputs/). */
static size_t pool_entries_of(const fixture *f, bool roots)
{
    char *pool = obi_path_join(f->bundles, OBI_ROOT_POOL_DIR);
    DIR *d = opendir(pool);
    if (!d) {
        free(pool);
        return 0;
    }
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *etc = NULL;
        struct stat st;
        assert_true(asprintf(&etc, "%s/%s/etc", pool, de->d_name) > 0);
        if ((stat(etc, &st) == 0) == roots)
            n++;
        free(etc);
    }
    closedir(d);
    free(pool);
    return n;
}

static size_t root_pool_entries(const fixture *f)
{
    return pool_entries_of(f, true);
}

/* FAKE_SCRIPT that produces the output and appends the inode of the bundle's root/ to
 * DIR/inodes. */
static void script_recording_root_inode(const fixture *f)
{
    char *script = NULL;
    assert_true(asprintf(&script,
                         "mkdir \"$SCRATCH/result\" && stat -c %%i \"$SCRATCH/../../root\" >> "
                         "%s/inodes",
                         f->dir) > 0);
    setenv("FAKE_SCRIPT", script, 1);
    free(script);
}

static char *recorded_inodes(const fixture *f)
{
    char *path = obi_path_join(f->dir, "inodes"), *text = NULL;
    assert_ok(obi_read_file(path, 4096, &text, NULL, err_ptr_));
    free(path);
    return text;
}

static void build_ok(fixture *f, obi_build_request *req)
{
    obi_build *build = NULL;
    assert_ok(obi_build_service_do_build(f->service, req, &build, err_ptr_));
    obi_build_free(build);
    obi_oci_build_service_settle(f->service); /* its id slot free again, as the next needs */
}

static void test_oci_build_second_build_reuses_the_first_ones_root(void **state)
{
    fixture *f = *state;
    script_recording_root_inode(f);
    obi_build_request *req = simple_request();
    build_ok(f, req);
    assert_int_equal(root_pool_entries(f), 1);
    assert_int_equal(pool_entries_of(f, false), 1); /* the bundle directory, pooled too */
    build_ok(f, req);
    assert_int_equal(root_pool_entries(f), 1);
    assert_int_equal(pool_entries_of(f, false), 1);
    char *inodes = recorded_inodes(f);
    char *second = strchr(inodes, '\n');
    assert_non_null(second);
    *second++ = 0;
    assert_string_equal(inodes, strtok(second, "\n")); /* the same directory both times */
    free(inodes);
    assert_true(bundle_root_is_empty(f));
    obi_build_request_free(req);
}

static void test_oci_build_other_shapes_get_their_own_root(void **state)
{
    fixture *f = *state;
    script_recording_root_inode(f);
    obi_build_request *req = simple_request();
    build_ok(f, req);
    free(req->working_dir); /* home in etc/passwd changes: another skeleton */
    req->working_dir = strdup("out");
    build_ok(f, req);
    assert_int_equal(root_pool_entries(f), 2);
    char *inodes = recorded_inodes(f);
    char *second = strchr(inodes, '\n');
    assert_non_null(second);
    *second++ = 0;
    assert_string_not_equal(inodes, strtok(second, "\n"));
    free(inodes);
    obi_build_request_free(req);
}

/* simple_request with one file input named name, mounted below inputs_dir. */
static obi_build_request *request_with_input(const fixture *f, const char *name,
                                             const char *inputs_dir)
{
    char *file = obi_path_join(f->dir, name);
    assert_ok(obi_write_file(file, name, strlen(name), 0644, err_ptr_));
    obi_build_request *req = simple_request();
    req->inputs = calloc(1, sizeof *req->inputs);
    obi_ingest_options options = {.name = name};
    assert_ok(obi_ingest_path(f->store->blobs, f->store->directories, file, &options,
                              &req->inputs[0], err_ptr_));
    req->n_inputs = 1;
    free(req->inputs_dir);
    req->inputs_dir = strdup(inputs_dir);
    free(file);
    return req;
}

/* Inputs mounted below a scratch dir (a Nix build's /nix/store) get their mount points there,
 * not in root/: builds on other inputs share a skeleton. Mounted in root/, they do not. */
static void test_oci_build_inputs_below_a_scratch_dir_share_a_root(void **state)
{
    fixture *f = *state;
    script_recording_root_inode(f);
    obi_build_request *one = request_with_input(f, "aaa-one", "out");
    obi_build_request *two = request_with_input(f, "bbb-two", "out");
    build_ok(f, one);
    build_ok(f, two);
    assert_int_equal(root_pool_entries(f), 1);
    char *inodes = recorded_inodes(f);
    char *second = strchr(inodes, '\n');
    assert_non_null(second);
    *second++ = 0;
    assert_string_equal(inodes, strtok(second, "\n"));
    free(inodes);
    obi_build_request_free(one);
    obi_build_request_free(two);

    obi_build_request *three = request_with_input(f, "ccc-three", "");
    obi_build_request *four = request_with_input(f, "ddd-four", "");
    build_ok(f, three);
    build_ok(f, four);
    assert_int_equal(root_pool_entries(f), 3);
    obi_build_request_free(three);
    obi_build_request_free(four);
}

static void test_oci_build_failed_build_does_not_pool_its_root(void **state)
{
    fixture *f = *state;
    setenv("FAKE_SCRIPT", "exit 3", 1);
    obi_build_request *req = simple_request();
    obi_build *build = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_service_do_build(f->service, req, &build, &err),
                      OBI_EBUILD_FAILED, "exit code 3");
    assert_int_equal(root_pool_entries(f), 0);
    assert_true(bundle_root_is_empty(f));
    obi_build_request_free(req);
}

static void test_oci_build_root_pool_can_be_turned_off(void **state)
{
    fixture *f = *state;
    script_recording_root_inode(f);
    obi_build_request *req = simple_request();
    build_ok(f, req);
    build_ok(f, req);
    assert_int_equal(root_pool_entries(f), 0);
    assert_true(bundle_root_is_empty(f));
    obi_build_request_free(req);
}

/* The limits as URL parameters: sizes with units, errors naming the parameter, and the limits
 * rootless builds cannot have refused before anything is made. */
static int open_url(const char *text, obi_build_service **out, obi_error **err)
{
    cleanup_url obi_url *url = NULL;
    int r = obi_url_parse(text, &url, err);
    if (r == 0)
        r = obi_oci_build_service_from_url(url, NULL, out, err);
    return r;
}

static void test_oci_build_url_limits_are_checked_by_name(void **state)
{
    (void)state;
    obi_build_service *svc = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, open_url("oci:///nonexistent/b?memory=12.5Mi", &svc, &err), -EINVAL,
                      "oci build service: memory=12.5Mi: memory string \"12.5Mi\" is fractional");
    assert_fails_with(err, open_url("oci:///nonexistent/b?scratch_limit=1MB", &svc, &err), -EINVAL,
                      "scratch_limit=1MB");
    assert_fails_with(err, open_url("oci:///nonexistent/b?max_pids=-1", &svc, &err), -EINVAL,
                      "max_pids=-1: expected a non-negative integer");
    assert_fails_with(err, open_url("oci:///nonexistent/b?pids=5", &svc, &err), -EINVAL,
                      "root_pool, max_pids, memory, scratch_limit, inputs)");
    assert_fails_with(err, open_url("oci:///nonexistent/b?inputs=lazy", &svc, &err), -EINVAL,
                      "oci build service: inputs: \"lazy\" is not one of auto, materialize, fuse");
    assert_fails_with(err, open_url("oci:///nonexistent/b?rootless=true&memory=64Mi", &svc, &err),
                      -ENOTSUP, "rootless builds cannot have a memory limit");
    assert_fails_with(err,
                      open_url("oci:///nonexistent/b?rootless=true&scratch_limit=1Gi", &svc, &err),
                      -ENOTSUP, "rootless builds cannot have a scratch limit");
    assert_null(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_oci_build_ingests_outputs_with_needles, setup_two,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_oci_build_failure_reports_exit_code_and_tail_and_cleans_up, setup_two, teardown),
        cmocka_unit_test_setup_teardown(test_oci_build_invalid_request_touches_nothing, setup_two,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_oci_build_runs_at_most_max_builds_at_once, setup_two,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_oci_build_second_build_reuses_the_first_ones_root,
                                        setup_two, teardown),
        cmocka_unit_test_setup_teardown(test_oci_build_other_shapes_get_their_own_root, setup_two,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_oci_build_inputs_below_a_scratch_dir_share_a_root,
                                        setup_two, teardown),
        cmocka_unit_test_setup_teardown(test_oci_build_failed_build_does_not_pool_its_root,
                                        setup_two, teardown),
        cmocka_unit_test_setup_teardown(test_oci_build_root_pool_can_be_turned_off,
                                        setup_without_root_pool, teardown),
        cmocka_unit_test(test_oci_build_url_limits_are_checked_by_name),
        cmocka_unit_test_setup_teardown(test_oci_build_call_cancel_fd_stops_that_build_only,
                                        setup_two, teardown),
        cmocka_unit_test_setup_teardown(test_oci_build_cancelled_while_waiting_gives_up_its_turn,
                                        setup_one, teardown),
        cmocka_unit_test_setup_teardown(test_oci_build_call_output_gets_that_builds_log, setup_two,
                                        teardown),
    };
    return cmocka_run_group_tests_name("oci_build", tests, NULL, NULL);
}
