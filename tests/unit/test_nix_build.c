/*
 * Unit tests for building derivations with a stand-in build service (it writes each output from
 * the derivation's env: "content_<output>" as a file's contents, "exec_<output>" makes it
 * executable, "dir_<output>" makes it a directory holding an empty file of that name; "sleep_ms"
 * makes the build last, "fail" fails it, "wait_cancel" waits until the build is cancelled,
 * "wait_for_file" and "wait_for_text" wait until that file holds that text, "wait_running"
 * waits until that many builds run at once). The
 * stand-in reports no needles: references must come from nix_build's own scan of the NAR.
 * Covered: inputs first and reuse of valid outputs, records and JSON, fixed-output checks, the
 * checks before and after a build with Nix's messages, references in file names, independent
 * builds at once, the first failure stopping the rest, floating content-addressed outputs and
 * derivations resolved on them, -K passed through, and registering results with nix-store
 * (after the build, or streamed while the builds go on).
 */
#include "test_helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/nix_build.h"
#include "ocibuild/nix_ca.h"
#include "ocibuild/nix_output.h"
#include "ocibuild/nix_store_path.h"
#include "ocibuild/sha256.h"

#define DEV "/nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev"
#define OUT "/nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep"
#define TOP "/nix/store/vaf1hazi08dqf253k9wp3qr1xwdpapz9-top"
#define FOD "/nix/store/9q0mqp4y1k819ysjzsfjah1ld74x19w2-fod" /* sha256 of "hello", name fod */
#define HELLO_SHA256 "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"

/* ---- the stand-in build service ---- */

typedef struct fake_builder {
    obi_build_service base;
    obi_store *store;
    pthread_mutex_t lock;
    int builds;
    int running, max_running;
    bool keep_failed_seen;
    obi_build_request *last; /* copy of the last request */
} fake_builder;

static const char *env_get(const obi_build_request *req, const char *key)
{
    for (size_t i = 0; i < req->n_environment_vars; i++)
        if (!strcmp(req->environment_vars[i].key, key))
            return (const char *)req->environment_vars[i].value.data;
    return NULL;
}

/* The name of the output at path (the env key whose value is that path). */
static const char *output_name(const obi_build_request *req, const char *path)
{
    for (size_t i = 0; i < req->n_environment_vars; i++)
        if (!strcmp((const char *)req->environment_vars[i].value.data, path))
            return req->environment_vars[i].key;
    return NULL;
}

static const char *output_setting(const obi_build_request *req, const char *what, const char *name)
{
    char key[256];
    snprintf(key, sizeof key, "%s_%s", what, name);
    return env_get(req, key);
}

static int make_output(fake_builder *f, const obi_build_request *req, const char *path,
                       obi_node *node, obi_error **err)
{
    const char *name = output_name(req, path);
    if (!name)
        return obi_error_set(err, -EINVAL, "no env entry names %s", path);
    const char *content = output_setting(req, "content", name);
    const char *dir = output_setting(req, "dir", name);
    const char *base = strrchr(path, '/') + 1;
    obi_digest digest;
    int r = obi_blob_put_bytes(f->store->blobs, content ? content : "",
                               content ? strlen(content) : 0, &digest, err);
    if (r < 0)
        return r;
    if (!dir)
        return obi_node_init_file(node, base, strlen(base), &digest, content ? strlen(content) : 0,
                                  output_setting(req, "exec", name) != NULL) < 0
                   ? obi_error_oom(err)
                   : 0;
    cleanup_directory obi_directory *d = obi_directory_new();
    cleanup_node obi_node file = {0};
    cleanup_directory_putter obi_directory_putter *putter = NULL;
    obi_digest dir_digest, empty;
    if ((r = obi_blob_put_bytes(f->store->blobs, "", 0, &empty, err)) < 0)
        return r;
    if (!d || obi_node_init_file(&file, dir, strlen(dir), &empty, 0, false) < 0 ||
        obi_directory_add(d, &file) < 0)
        return obi_error_oom(err);
    if ((r = obi_directory_open_put(f->store->directories, &putter, err)) < 0 ||
        (r = obi_directory_put(putter, d, &dir_digest, err)) < 0 ||
        (r = obi_directory_putter_finish(putter, &dir_digest, err)) < 0)
        return r;
    return obi_node_init_directory(node, base, strlen(base), &dir_digest, 1) < 0
               ? obi_error_oom(err)
               : 0;
}

/* Waits up to 5 s until file holds text (a stand-in nix-store writes it as it reads). */
static int wait_for_text(const char *file, const char *text, obi_error **err)
{
    for (int i = 0; i < 500; i++) {
        cleanup_free char *data = NULL;
        size_t len = 0;
        cleanup_error obi_error *ignored = NULL;
        if (obi_read_file(file, 1 << 20, &data, &len, &ignored) == 0 &&
            memmem(data, len, text, strlen(text)))
            return 0;
        usleep(10000);
    }
    return obi_error_set(err, OBI_EBUILD_FAILED, "%s never held %s", file, text);
}

/* Waits (5 s at most) until N builds run at once: the order of two builds in a test, on a host
 * however slow, instead of a sleep. */
static int wait_running(fake_builder *f, int n, obi_error **err)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&f->lock);
        bool reached = f->running >= n;
        pthread_mutex_unlock(&f->lock);
        if (reached)
            return 0;
        usleep(10000);
    }
    return obi_error_set(err, OBI_EBUILD_FAILED, "never %d builds at once", n);
}

static int fake_do_build(obi_build_service *svc, const obi_build_request *req,
                         const obi_build_call *call, obi_build **out, obi_error **err)
{
    fake_builder *f = (fake_builder *)svc;
    int r = obi_build_request_validate(req, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&f->lock);
    f->builds++;
    if (++f->running > f->max_running)
        f->max_running = f->running;
    f->keep_failed_seen = f->keep_failed_seen || (call && call->keep_failed);
    obi_build_request_free(f->last);
    f->last = NULL;
    r = obi_build_request_copy(req, &f->last, err);
    pthread_mutex_unlock(&f->lock);
    const char *sleep_ms = env_get(req, "sleep_ms");
    if (r >= 0 && sleep_ms)
        usleep((useconds_t)atoi(sleep_ms) * 1000);
    if (r >= 0 && env_get(req, "wait_running"))
        r = wait_running(f, atoi(env_get(req, "wait_running")), err);
    if (r >= 0 && env_get(req, "wait_cancel")) {
        struct pollfd p = {call ? call->cancel_fd : -1, POLLIN, 0};
        r = poll(&p, 1, 5000) == 1 ? obi_error_set(err, -ECANCELED, "cancelled")
                                   : obi_error_set(err, -ETIMEDOUT, "never cancelled");
    }
    if (r >= 0 && env_get(req, "wait_for_file"))
        r = wait_for_text(env_get(req, "wait_for_file"), env_get(req, "wait_for_text"), err);
    if (r >= 0 && env_get(req, "fail"))
        r = obi_error_set(err, OBI_EBUILD_FAILED, "builder exited with code 1");
    cleanup_build obi_build *build = r >= 0 ? obi_build_new() : NULL;
    if (r >= 0 &&
        (!build || !(build->outputs = calloc(req->n_outputs, sizeof *build->outputs)) ||
         !(build->outputs_needles = calloc(req->n_outputs, sizeof *build->outputs_needles))))
        r = obi_error_oom(err);
    if (r >= 0)
        r = obi_build_request_copy(req, &build->request, err);
    for (size_t i = 0; r >= 0 && i < req->n_outputs; i++) {
        cleanup_free char *path = NULL;
        if (asprintf(&path, "/%s", req->outputs[i]) < 0)
            r = obi_error_oom(err);
        else if ((r = make_output(f, req, path, &build->outputs[i], err)) >= 0)
            build->n_outputs++;
    }
    pthread_mutex_lock(&f->lock);
    f->running--;
    pthread_mutex_unlock(&f->lock);
    if (r < 0)
        return r;
    *out = steal_pointer(&build);
    return 0;
}

static void fake_free(obi_build_service *svc)
{
    (void)svc;
}

static const struct obi_build_service_ops FAKE_OPS = {fake_do_build, fake_free, NULL};

/* ---- fixture ---- */

static char *TEST_FEATURES[] = {"big-parallel", "ca-derivations", NULL};
static char *TEST_PLATFORMS[] = {"i686-linux", NULL};
static const obi_nix_machine TEST_MACHINE = {(char *)"x86_64-linux", TEST_PLATFORMS, TEST_FEATURES};

typedef struct fixture {
    char *dir;
    obi_store store;
    fake_builder builder;
    obi_nix_path_info_store *path_infos;
    obi_nix_build_options opts;
    char *store_dir; /* stands for /nix/store: holds the .drv files, no outputs */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    assert_ok(obi_memory_blob_service_new(&f->store.blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&f->store.directories, err_ptr_));
    f->builder.base.ops = &FAKE_OPS;
    f->builder.store = &f->store;
    pthread_mutex_init(&f->builder.lock, NULL);
    cleanup_free char *pi = NULL;
    assert_true(asprintf(&pi, "%s/path-info", f->dir) > 0);
    assert_ok(obi_nix_path_info_store_open(pi, &f->path_infos, err_ptr_));
    assert_true(asprintf(&f->store_dir, "%s/store", f->dir) > 0);
    assert_int_equal(mkdir(f->store_dir, 0755), 0);
    f->opts = (obi_nix_build_options){
        .store = &f->store,
        .builder = &f->builder.base,
        .path_infos = f->path_infos,
        .nix_store = "/nonexistent/nix-store", /* never needed: no output is in store_dir */
        .nix = "/nonexistent/nix",
        .nix_store_dir = f->store_dir,
        .build_cores = 1,
        .max_jobs = 1,
        .machine = &TEST_MACHINE,
    };
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    obi_build_request_free(f->builder.last);
    pthread_mutex_destroy(&f->builder.lock);
    obi_nix_path_info_store_close(f->path_infos);
    obi_blob_service_free(f->store.blobs);
    obi_directory_service_free(f->store.directories);
    obi_test_tmpdir_remove(f->dir);
    free(f->store_dir);
    free(f);
    return 0;
}

/* Writes a .drv into the store dir; returns its store path "/nix/store/<hash>-<name>.drv".
 * hash: 32 nixbase32 characters. */
static char *write_drv(fixture *f, const char *hash, const char *name, const char *text)
{
    char *store_path = NULL;
    cleanup_free char *file = NULL;
    assert_true(asprintf(&store_path, "/nix/store/%s-%s.drv", hash, name) > 0);
    assert_true(asprintf(&file, "%s/%s-%s.drv", f->store_dir, hash, name) > 0);
    FILE *out = fopen(file, "w");
    assert_non_null(out);
    fputs(text, out);
    fclose(out);
    return store_path;
}

#define H(c) "0000000000000000000000000000000" c

/* dep: "dev" refers to itself, "out" refers to "dev". */
static char *write_dep(fixture *f)
{
    return write_drv(f, H("1"), "dep",
                     "Derive([(\"dev\",\"" DEV "\",\"\",\"\"),(\"out\",\"" OUT "\",\"\",\"\")],"
                     "[],[],\"x86_64-linux\",\"/b\",[],[(\"content_dev\",\"me: " DEV "\"),"
                     "(\"content_out\",\"needs " DEV "\"),(\"dev\",\"" DEV "\"),(\"out\",\"" OUT
                     "\")])");
}

/* top: uses dep's "out" and refers to it; extra env entries may follow. */
static char *write_top_with(fixture *f, const char *dep_path, const char *extra_env)
{
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "Derive([(\"out\",\"" TOP "\",\"\",\"\")],[(\"%s\",[\"out\"])],[],"
                         "\"x86_64-linux\",\"/b\",[],[(\"content_out\",\"uses " OUT "\"),"
                         "(\"out\",\"" TOP "\")%s])",
                         dep_path, extra_env) > 0);
    return write_drv(f, H("2"), "top", text);
}

static char *write_top(fixture *f, const char *dep_path)
{
    return write_top_with(f, dep_path, "");
}

/* NAR hash of a file with these contents, computed on disk (independently of castore). */
static char *nar_hash_of_text(fixture *f, const char *text)
{
    cleanup_free char *path = NULL;
    assert_true(asprintf(&path, "%s/nar-check", f->dir) > 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    obi_nar_hash h;
    assert_ok(obi_nar_hash_path(path, &h, err_ptr_));
    unlink(path);
    return obi_nar_hash_to_string(&h);
}

static void test_nix_build_builds_input_derivations_first(void **state)
{
    fixture *f = *state;
    cleanup_free char *dep = write_dep(f);
    cleanup_free char *top = write_top(f, dep);
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(top, &f->opts, &result, err_ptr_));
    assert_int_equal(f->builder.builds, 2);
    assert_int_equal(result->n_built, 2);
    /* top's inputs: dep's out and, through its references, dep's dev */
    assert_int_equal(f->builder.last->n_inputs, 2);
    assert_string_equal((const char *)f->builder.last->inputs[0].name.data, &DEV[11]);
    assert_string_equal((const char *)f->builder.last->inputs[1].name.data, &OUT[11]);

    assert_int_equal(result->n_outputs, 1);
    assert_string_equal(result->outputs[0].name, "out");
    assert_string_equal(result->outputs[0].info->path, TOP);
    assert_int_equal(result->outputs[0].info->n_references, 1);
    assert_string_equal(result->outputs[0].info->references[0], OUT);
    assert_string_equal(result->outputs[0].info->deriver, top);
    cleanup_free char *want = nar_hash_of_text(f, "uses " OUT);
    cleanup_free char *got = obi_nar_hash_to_string(&result->outputs[0].info->nar);
    assert_string_equal(got, want);
}

static void test_nix_build_records_outputs_with_references(void **state)
{
    fixture *f = *state;
    cleanup_free char *dep = write_dep(f);
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(dep, &f->opts, &result, err_ptr_));
    /* derivation order: dev, out */
    assert_int_equal(result->n_outputs, 2);
    assert_string_equal(result->outputs[0].name, "dev");
    assert_string_equal(result->outputs[1].name, "out");
    cleanup_nix_path_info obi_nix_path_info *dev = NULL, *out = NULL;
    assert_ok(obi_nix_path_info_get(f->path_infos, DEV, &dev, err_ptr_));
    assert_ok(obi_nix_path_info_get(f->path_infos, OUT, &out, err_ptr_));
    assert_int_equal(dev->n_references, 1);
    assert_string_equal(dev->references[0], DEV); /* self-reference */
    assert_int_equal(out->n_references, 1);
    assert_string_equal(out->references[0], DEV);
    assert_string_equal((const char *)out->node.name.data, &OUT[11]);
    assert_string_equal(out->deriver, dep);
}

/* Valid outputs (here: recorded by an earlier build) are reported, never built again: neither
 * the inputs nor the derivation given. */
static void test_nix_build_valid_outputs_are_not_rebuilt(void **state)
{
    fixture *f = *state;
    cleanup_free char *dep = write_dep(f);
    cleanup_free char *top = write_top(f, dep);
    cleanup_nix_build_result obi_nix_build_result *first = NULL, *second = NULL;
    assert_ok(obi_nix_build(top, &f->opts, &first, err_ptr_));
    assert_int_equal(f->builder.builds, 2);
    assert_ok(obi_nix_build(top, &f->opts, &second, err_ptr_));
    assert_int_equal(f->builder.builds, 2);
    assert_int_equal(second->n_built, 0);
    assert_memory_equal(first->outputs[0].info->nar.sha256, second->outputs[0].info->nar.sha256,
                        32);
    assert_string_equal(second->outputs[0].info->references[0], OUT);
}

static void test_nix_build_prints_json_like_the_issue_says(void **state)
{
    fixture *f = *state;
    cleanup_free char *dep = write_dep(f);
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(dep, &f->opts, &result, err_ptr_));
    cleanup_json json_t *json = obi_nix_build_result_to_json(result);
    assert_non_null(json);
    cleanup_free char *text = json_dumps(json, JSON_SORT_KEYS | JSON_COMPACT);
    cleanup_free char *dev_hash = nar_hash_of_text(f, "me: " DEV);
    cleanup_free char *out_hash = nar_hash_of_text(f, "needs " DEV);
    cleanup_free char *want = NULL;
    assert_true(asprintf(&want,
                         "{\"outputs\":{\"dev\":{\"narHash\":\"%s\",\"path\":\"" DEV
                         "\",\"references\":[\"" DEV "\"]},\"out\":{\"narHash\":\"%s\","
                         "\"path\":\"" OUT "\",\"references\":[\"" DEV "\"]}}}",
                         dev_hash, out_hash) > 0);
    assert_string_equal(text, want);
}

/* A fixed-output derivation named "fod" (its path follows from the hash and the name, as Nix
 * computes it). */
static char *write_fod(fixture *f, const char *algo, const char *hash, const char *extra_env,
                       const char *sources)
{
    uint8_t digest[32];
    assert_int_equal(obi_hex_decode(hash, 64, digest, 32), 0);
    cleanup_free char *path = NULL, *text = NULL;
    assert_ok(obi_nix_make_fixed_output_path(false, algo, digest, 32, "fod", NULL, 0, false, &path,
                                             err_ptr_));
    assert_true(asprintf(&text,
                         "Derive([(\"out\",\"%s\",\"%s\",\"%s\")],[],[%s],\"x86_64-linux\","
                         "\"/b\",[],[%s(\"out\",\"%s\")])",
                         path, algo, hash, sources, extra_env, path) > 0);
    return write_drv(f, H("3"), "fod", text);
}

static void test_nix_build_accepts_fixed_output_with_right_hash(void **state)
{
    fixture *f = *state;
    cleanup_free char *fod =
        write_fod(f, "sha256", HELLO_SHA256, "(\"content_out\",\"hello\"),", "");
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(fod, &f->opts, &result, err_ptr_));
    assert_true(f->builder.last->constraints.network_access);
    assert_string_equal(result->outputs[0].info->path, FOD);
    assert_int_equal(result->outputs[0].info->n_references, 0);
    assert_string_equal(result->outputs[0].info->ca,
                        "fixed:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic");
}

static void test_nix_build_fails_fixed_output_with_wrong_hash_recording_nothing(void **state)
{
    fixture *f = *state;
    cleanup_free char *fod =
        write_fod(f, "sha256", HELLO_SHA256, "(\"content_out\",\"hellp\"),", "");
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_build(fod, &f->opts, &result, &err), OBI_EHASH_MISMATCH,
                      "hash mismatch in fixed-output derivation '" FOD
                      "': specified sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic, "
                      "got sha256:1rscm841ggcb1h2f5f9dyjimgmc9diiv9gfa3pbszqn411g5imzx");
    assert_null(result);
    obi_nix_path_info *info = NULL;
    assert_int_equal(obi_nix_path_info_get(f->path_infos, FOD, &info, &err), -ENOENT);
    obi_error_free(err);
}

/* A path recorded in the own store (an input source for the tests below). */
#define LIB "/nix/store/0a1ssdzzwb0c0hw63bkyfcml0qqn0c2x-lib"
static void record_lib(fixture *f)
{
    obi_nix_path_info info = {0};
    obi_digest digest;
    assert_ok(obi_blob_put_bytes(f->store.blobs, "lib", 3, &digest, err_ptr_));
    assert_int_equal(obi_node_init_file(&info.node, &LIB[11], strlen(&LIB[11]), &digest, 3, false),
                     0);
    info.path = (char *)LIB;
    char *refs[] = {NULL};
    info.references = refs;
    assert_ok(
        obi_nar_hash_node(f->store.blobs, f->store.directories, &info.node, &info.nar, err_ptr_));
    assert_ok(obi_nix_path_info_put(f->path_infos, &info, err_ptr_));
    obi_node_clear(&info.node);
}

static void test_nix_build_refuses_fixed_output_with_references(void **state)
{
    fixture *f = *state;
    record_lib(f);
    /* the right hash for contents that name an input */
    const char *content = "x 0a1ssdzzwb0c0hw63bkyfcml0qqn0c2x";
    uint8_t digest[32];
    char hex[65];
    obi_sha256_oneshot(content, strlen(content), digest);
    obi_hex_encode(digest, sizeof digest, hex);
    cleanup_free char *env = NULL;
    assert_true(asprintf(&env, "(\"content_out\",\"%s\"),", content) > 0);
    cleanup_free char *fod = write_fod(f, "sha256", hex, env, "\"" LIB "\"");
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_build(fod, &f->opts, &result, &err), -EINVAL,
                      "must not reference store paths (it references " LIB ")");
}

/* A flat fixed output must be a regular file that is not executable (Nix's message). */
static void test_nix_build_refuses_executable_flat_fixed_output(void **state)
{
    fixture *f = *state;
    cleanup_free char *fod = write_fod(f, "sha256", HELLO_SHA256,
                                       "(\"content_out\",\"hello\"),(\"exec_out\",\"1\"),", "");
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_build(fod, &f->opts, &result, &err), -EINVAL,
                      "output path '" FOD "' should be a non-executable regular file since "
                      "recursive hashing is not enabled (outputHashMode=flat)");
}

static void test_nix_build_failure_keeps_code_and_records_nothing(void **state)
{
    fixture *f = *state;
    cleanup_free char *drv =
        write_drv(f, H("4"), "fail",
                  "Derive([(\"out\",\"" TOP "\",\"\",\"\")],[],[],\"x86_64-linux\",\"/b\",[],"
                  "[(\"fail\",\"1\"),(\"out\",\"" TOP "\")])");
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    cleanup_free char *want = NULL;
    assert_true(asprintf(&want, "build of %s: builder exited with code 1", drv) > 0);
    assert_fails_with(err, obi_nix_build(drv, &f->opts, &result, &err), OBI_EBUILD_FAILED, want);
    obi_nix_path_info *info = NULL;
    assert_int_equal(obi_nix_path_info_get(f->path_infos, TOP, &info, &err), -ENOENT);
    obi_error_free(err);
}

static void test_nix_build_reports_input_that_is_nowhere(void **state)
{
    fixture *f = *state;
    cleanup_free char *drv =
        write_drv(f, H("5"), "lost",
                  "Derive([(\"out\",\"" TOP "\",\"\",\"\")],[],[\"" LIB "\"],\"x86_64-linux\","
                  "\"/b\",[],[])");
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_build(drv, &f->opts, &result, &err), -ENOENT,
                      "dependency '" LIB "' does not exist, and substitution is disabled");
    assert_int_equal(f->builder.builds, 0);
}

static void test_nix_build_input_failure_names_the_input(void **state)
{
    fixture *f = *state;
    cleanup_free char *dep =
        write_drv(f, H("1"), "dep",
                  "Derive([(\"out\",\"" OUT "\",\"\",\"\")],[],[],\"x86_64-linux\",\"/b\",[],"
                  "[(\"fail\",\"1\"),(\"out\",\"" OUT "\")])");
    cleanup_free char *top = write_top(f, dep);
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    cleanup_free char *want = NULL;
    assert_true(asprintf(&want, "building input %s: build of %s: builder exited", dep, dep) > 0);
    assert_fails_with(err, obi_nix_build(top, &f->opts, &result, &err), OBI_EBUILD_FAILED, want);
    assert_int_equal(f->builder.builds, 1);
}

/* ---- independent builds at once, and failures ---- */

/* leaf i: output "/nix/store/<H(a+i)>-leaf-i"; join refers to every leaf. */
static char *leaf_path(int i)
{
    char *p = NULL;
    assert_true(asprintf(&p, "/nix/store/00000000000000000000000000000%03d-leaf-%d", 100 + i, i) >
                0);
    return p;
}

static char *write_fan_out(fixture *f, int n, const char *leaf_env[])
{
    cleanup_buf obi_buf inputs = OBI_BUF_INIT, content = OBI_BUF_INIT;
    for (int i = 0; i < n; i++) {
        cleanup_free char *out = leaf_path(i), *text = NULL, *hash = NULL, *name = NULL;
        assert_true(asprintf(&text,
                             "Derive([(\"out\",\"%s\",\"\",\"\")],[],[],\"x86_64-linux\",\"/b\","
                             "[],[(\"content_out\",\"leaf %d\"),(\"out\",\"%s\")%s])",
                             out, i, out, leaf_env[i]) > 0);
        assert_true(asprintf(&hash, "00000000000000000000000000000%03d", 200 + i) > 0);
        assert_true(asprintf(&name, "leaf-%d", i) > 0);
        cleanup_free char *drv = write_drv(f, hash, name, text);
        obi_buf_appendf(&inputs, "%s(\"%s\",[\"out\"])", i ? "," : "", drv);
        obi_buf_appendf(&content, " %s", out);
    }
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "Derive([(\"out\",\"" TOP "\",\"\",\"\")],[%s],[],\"x86_64-linux\",\"/b\","
                         "[],[(\"content_out\",\"join%s\"),(\"out\",\"" TOP "\")])",
                         (const char *)inputs.data, (const char *)content.data) > 0);
    return write_drv(f, H("9"), "join", text);
}

static void test_nix_build_runs_independent_derivations_at_once(void **state)
{
    fixture *f = *state;
    const char *env[] = {",(\"sleep_ms\",\"150\")", ",(\"sleep_ms\",\"150\")",
                         ",(\"sleep_ms\",\"150\")"};
    cleanup_free char *join = write_fan_out(f, 3, env);
    f->opts.max_jobs = 2;
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(join, &f->opts, &result, err_ptr_));
    assert_int_equal(f->builder.builds, 4);
    assert_int_equal(f->builder.max_running, 2); /* leaves overlapped, never more than -j */
    assert_int_equal(result->outputs[0].info->n_references, 3);
    /* the join ran last: its request saw every leaf as an input */
    assert_int_equal(f->builder.last->n_inputs, 3);
}

/* A diamond: one leaf (100 ms: the other worker is waiting by its end), two middles that read
 * it (150 ms each), the join over both. The leaf's end makes both middles ready at once: the worker
 * that built it takes one and must wake the other worker for the second (it wakes no worker for
 * nothing, so this is the wake it owes). */
static void test_nix_build_wakes_a_worker_for_each_node_made_ready(void **state)
{
    fixture *f = *state;
    const char *leaf_out = "/nix/store/00000000000000000000000000000300-leaf";
    cleanup_free char *leaf_text = NULL;
    assert_true(asprintf(&leaf_text,
                         "Derive([(\"out\",\"%s\",\"\",\"\")],[],[],\"x86_64-linux\",\"/b\",[],"
                         "[(\"content_out\",\"leaf\"),(\"out\",\"%s\"),(\"sleep_ms\",\"100\")])",
                         leaf_out, leaf_out) > 0);
    cleanup_free char *leaf = write_drv(f, "00000000000000000000000000000300", "leaf", leaf_text);
    cleanup_buf obi_buf inputs = OBI_BUF_INIT;
    for (int i = 0; i < 2; i++) {
        cleanup_free char *out = NULL, *text = NULL, *hash = NULL, *name = NULL;
        assert_true(asprintf(&out, "/nix/store/00000000000000000000000000000%03d-middle-%d",
                             301 + i, i) > 0);
        assert_true(asprintf(&text,
                             "Derive([(\"out\",\"%s\",\"\",\"\")],[(\"%s\",[\"out\"])],[],"
                             "\"x86_64-linux\",\"/b\",[],[(\"content_out\",\"middle %d %s\"),"
                             "(\"out\",\"%s\"),(\"sleep_ms\",\"150\")])",
                             out, leaf, i, leaf_out, out) > 0);
        assert_true(asprintf(&hash, "00000000000000000000000000000%03d", 301 + i) > 0);
        assert_true(asprintf(&name, "middle-%d", i) > 0);
        cleanup_free char *drv = write_drv(f, hash, name, text);
        obi_buf_appendf(&inputs, "%s(\"%s\",[\"out\"])", i ? "," : "", drv);
    }
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "Derive([(\"out\",\"" TOP "\",\"\",\"\")],[%s],[],\"x86_64-linux\","
                         "\"/b\",[],[(\"content_out\",\"join\"),(\"out\",\"" TOP "\")])",
                         (const char *)inputs.data) > 0);
    cleanup_free char *join = write_drv(f, H("8"), "join", text);
    f->opts.max_jobs = 2;
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(join, &f->opts, &result, err_ptr_));
    assert_int_equal(f->builder.builds, 4);
    assert_int_equal(f->builder.max_running, 2); /* the middles overlapped */
}

static void test_nix_build_runs_one_at_a_time_with_one_job(void **state)
{
    fixture *f = *state;
    const char *env[] = {",(\"sleep_ms\",\"50\")", ",(\"sleep_ms\",\"50\")"};
    cleanup_free char *join = write_fan_out(f, 2, env);
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(join, &f->opts, &result, err_ptr_));
    assert_int_equal(f->builder.max_running, 1);
}

/* The first failure cancels the builds running (through the call's cancel fd), starts no other
 * and is the one reported; the join is not built. */
static void test_nix_build_first_failure_stops_the_rest(void **state)
{
    fixture *f = *state;
    const char *env[] = {",(\"wait_cancel\",\"1\")", ",(\"wait_running\",\"2\"),(\"fail\",\"1\")"};
    cleanup_free char *join = write_fan_out(f, 2, env);
    f->opts.max_jobs = 2;
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_build(join, &f->opts, &result, &err), OBI_EBUILD_FAILED,
                      "-leaf-1.drv: builder exited with code 1");
    assert_int_equal(f->builder.builds, 2);
    obi_nix_path_info *info = NULL;
    assert_int_equal(obi_nix_path_info_get(f->path_infos, TOP, &info, &err), -ENOENT);
    obi_error_free(err);
}

static void test_nix_build_passes_keep_failed_to_the_builder(void **state)
{
    fixture *f = *state;
    cleanup_free char *dep = write_dep(f);
    f->opts.keep_failed = true;
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(dep, &f->opts, &result, err_ptr_));
    assert_true(f->builder.keep_failed_seen);
}

/* ---- what Nix checks ---- */

/* Nix scans the whole NAR: a hash that appears only in a file name is a reference. */
static void test_nix_build_finds_references_in_file_names(void **state)
{
    fixture *f = *state;
    cleanup_free char *dep = write_dep(f);
    cleanup_free char *top =
        write_top_with(f, dep, ",(\"dir_out\",\"qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep\")");
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(top, &f->opts, &result, err_ptr_));
    assert_int_equal(result->outputs[0].info->node.kind, OBI_NODE_DIRECTORY);
    assert_int_equal(result->outputs[0].info->n_references, 1);
    assert_string_equal(result->outputs[0].info->references[0], OUT);
}

static void test_nix_build_enforces_allowed_references(void **state)
{
    fixture *f = *state;
    cleanup_free char *dep = write_dep(f);
    cleanup_free char *top = write_top_with(f, dep, ",(\"allowedReferences\",\"\")");
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_build(top, &f->opts, &result, &err), -EINVAL,
                      "output '" TOP "' is not allowed to refer to the following paths:\n  " OUT);
    /* requisites: dep's out refers to dep's dev */
    cleanup_free char *top2 = write_top_with(f, dep, ",(\"allowedRequisites\",\"" OUT "\")");
    assert_fails_with(err, obi_nix_build(top2, &f->opts, &result, &err), -EINVAL,
                      "is not allowed to refer to the following paths:\n  " DEV);
    cleanup_free char *top3 = write_top_with(f, dep, ",(\"disallowedReferences\",\"nope\")");
    assert_fails_with(err, obi_nix_build(top3, &f->opts, &result, &err), -EINVAL,
                      "derivation contains an illegal reference specifier 'nope'");
    cleanup_free char *top4 =
        write_top_with(f, dep, ",(\"allowedRequisites\",\"" OUT " " DEV " out\")");
    cleanup_nix_build_result obi_nix_build_result *ok = NULL;
    assert_ok(obi_nix_build(top4, &f->opts, &ok, err_ptr_));
}

/* Two outputs that refer to each other: Nix's message names both. */
static void test_nix_build_refuses_cycles_between_outputs(void **state)
{
    fixture *f = *state;
    cleanup_free char *drv = write_drv(
        f, H("6"), "dep",
        "Derive([(\"dev\",\"" DEV "\",\"\",\"\"),(\"out\",\"" OUT "\",\"\",\"\")],[],[],"
        "\"x86_64-linux\",\"/b\",[],[(\"content_dev\",\"to " OUT "\"),(\"content_out\",\"to " DEV
        "\"),(\"dev\",\"" DEV "\"),(\"out\",\"" OUT "\")])");
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    cleanup_free char *want = NULL;
    assert_true(asprintf(&want,
                         "cycle detected in build of '%s' in the references of output 'dev' from "
                         "output 'out'",
                         drv) > 0);
    assert_fails_with(err, obi_nix_build(drv, &f->opts, &result, &err), -EINVAL, want);
}

static char *write_simple(fixture *f, const char *system, const char *extra_env)
{
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "Derive([(\"out\",\"" TOP "\",\"\",\"\")],[],[],\"%s\",\"/b\",[],"
                         "[(\"out\",\"" TOP "\")%s])",
                         system, extra_env) > 0);
    return write_drv(f, H("7"), "simple", text);
}

static void test_nix_build_refuses_what_this_machine_cannot_build(void **state)
{
    fixture *f = *state;
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    cleanup_free char *wrong = write_simple(f, "aarch64-linux", "");
    cleanup_free char *want = NULL;
    assert_true(asprintf(&want,
                         "a 'aarch64-linux' with features {} is required to build '%s', but I am "
                         "a 'x86_64-linux' with features {big-parallel, ca-derivations}",
                         wrong) > 0);
    assert_fails_with(err, obi_nix_build(wrong, &f->opts, &result, &err), -EINVAL, want);
    cleanup_free char *gpu =
        write_simple(f, "x86_64-linux", ",(\"requiredSystemFeatures\",\"gpu big-parallel\")");
    assert_fails_with(err, obi_nix_build(gpu, &f->opts, &result, &err), -EINVAL,
                      "a 'x86_64-linux' with features {big-parallel, gpu} is required to build");
    cleanup_free char *no_chroot = write_simple(f, "i686-linux", ",(\"__noChroot\",\"1\")");
    assert_fails_with(err, obi_nix_build(no_chroot, &f->opts, &result, &err), -EPERM,
                      "has '__noChroot' set, but that's not allowed when 'sandbox' is 'true'");
    cleanup_free char *impure =
        write_simple(f, "x86_64-linux", ",(\"__impureHostDeps\",\"/usr/lib /bin\")");
    assert_fails_with(err, obi_nix_build(impure, &f->opts, &result, &err), -EPERM,
                      "requested impure path '/usr/lib', but it was not in "
                      "allowed-impure-host-deps");
    assert_int_equal(f->builder.builds, 0);
}

/* ---- content-addressed derivations ---- */

/* A floating output is built at Nix's scratch path, then named by its hash modulo that path's
 * hash part; the contents that named the scratch path name the final one, which is a
 * self-reference. Where it was realised is recorded, so it is not built twice. */
static void test_nix_build_floating_output_gets_its_content_address(void **state)
{
    fixture *f = *state;
    const char *drv_text =
        "Derive([(\"out\",\"\",\"r:sha256\",\"\")],[],[],\"x86_64-linux\","
        "\"/b\",[],[(\"content_out\",\"me: /1rz4g4znpzjwh1xymhjpm42vipw92pr73vdg"
        "l6xs1hycac8kf2n9\"),(\"out\",\"/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1"
        "hycac8kf2n9\")])";
    cleanup_free char *drv = write_drv(f, H("8"), "ca", drv_text);
    cleanup_free char *scratch = obi_nix_ca_scratch_path(drv, "ca", "out");
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(drv, &f->opts, &result, err_ptr_));
    const obi_nix_path_info *info = result->outputs[0].info;
    /* the request's env named the scratch path (the placeholder replaced) */
    assert_string_equal(env_get(f->builder.last, "out"), scratch);
    assert_string_not_equal(info->path, scratch);
    assert_non_null(strstr(info->path, "-ca"));
    /* contents rewritten: "me: <final>", a self-reference */
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text, "me: %s", info->path) > 0);
    cleanup_free char *want = nar_hash_of_text(f, text);
    cleanup_free char *got = obi_nar_hash_to_string(&info->nar);
    assert_string_equal(got, want);
    assert_int_equal(info->n_references, 1);
    assert_string_equal(info->references[0], info->path);
    assert_non_null(info->ca);
    assert_true(strncmp(info->ca, "fixed:r:sha256:", 15) == 0);
    /* the path: makeFixedOutputPath over the hash modulo the scratch hash part, with :self */
    uint8_t hash[64];
    size_t len = 0;
    char old[33];
    snprintf(old, sizeof old, "%s", scratch + 11);
    cleanup_free char *scratch_text = NULL;
    assert_true(asprintf(&scratch_text, "me: %s", scratch) > 0);
    obi_digest d;
    assert_ok(obi_blob_put_bytes(f->store.blobs, scratch_text, strlen(scratch_text), &d, err_ptr_));
    obi_node node = {0};
    assert_int_equal(obi_node_init_file(&node, "x", 1, &d, strlen(scratch_text), false), 0);
    assert_ok(obi_nix_ca_hash(f->store.blobs, f->store.directories, &node, true, "sha256", old,
                              hash, &len, err_ptr_));
    obi_node_clear(&node);
    cleanup_free char *expected = NULL;
    assert_ok(obi_nix_make_fixed_output_path(true, "sha256", hash, len, "ca", NULL, 0, true,
                                             &expected, err_ptr_));
    assert_string_equal(info->path, expected);
    cleanup_free char *realised = NULL;
    assert_ok(obi_nix_realisation_get(f->path_infos, drv, "out", &realised, err_ptr_));
    assert_string_equal(realised, info->path);
    cleanup_nix_build_result obi_nix_build_result *again = NULL;
    assert_ok(obi_nix_build(drv, &f->opts, &again, err_ptr_));
    assert_int_equal(f->builder.builds, 1);
    assert_string_equal(again->outputs[0].info->path, info->path);
}

/* A derivation whose input is content-addressed names it by a downstream placeholder and has
 * no output path of its own yet (deferred): it is resolved once the input is built. */
static void test_nix_build_resolves_derivations_on_content_addressed_inputs(void **state)
{
    fixture *f = *state;
    cleanup_free char *ca =
        write_drv(f, H("8"), "ca",
                  "Derive([(\"out\",\"\",\"r:sha256\",\"\")],[],[],\"x86_64-linux\",\"/b\",[],"
                  "[(\"content_out\",\"ca contents\"),(\"out\",\"/1rz4g4znpzjwh1xymhjpm42vipw92"
                  "pr73vdgl6xs1hycac8kf2n9\")])");
    cleanup_free char *placeholder = obi_nix_downstream_placeholder(ca, "out");
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "Derive([(\"out\",\"\",\"\",\"\")],[(\"%s\",[\"out\"])],[],"
                         "\"x86_64-linux\",\"/b\",[],[(\"content_out\",\"uses %s\"),(\"dep\","
                         "\"%s\"),(\"out\",\"\")])",
                         ca, placeholder, placeholder) > 0);
    cleanup_free char *user = write_drv(f, H("a"), "user", text);
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(user, &f->opts, &result, err_ptr_));
    assert_int_equal(f->builder.builds, 2);
    cleanup_free char *ca_path = NULL;
    assert_ok(obi_nix_realisation_get(f->path_infos, ca, "out", &ca_path, err_ptr_));
    /* the placeholder became the input's path; the output got a path of its own */
    assert_string_equal(env_get(f->builder.last, "dep"), ca_path);
    const obi_nix_path_info *info = result->outputs[0].info;
    assert_string_equal(env_get(f->builder.last, "out"), info->path);
    assert_non_null(strstr(info->path, "-user"));
    assert_int_equal(info->n_references, 1);
    assert_string_equal(info->references[0], ca_path);
}

/* ---- making results Nix's ---- */

/* A stand-in nix-store that keeps what it is given on stdin. */
static void test_nix_build_register_streams_an_export_to_nix_store(void **state)
{
    fixture *f = *state;
    cleanup_free char *dep = write_dep(f);
    cleanup_free char *top = write_top(f, dep);
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(top, &f->opts, &result, err_ptr_));
    cleanup_free char *script = NULL, *saved = NULL, *text = NULL;
    assert_true(asprintf(&script, "%s/nix-store", f->dir) > 0);
    assert_true(asprintf(&saved, "%s/export", f->dir) > 0);
    assert_true(asprintf(&text, "#!/bin/sh\n[ \"$1\" = --import ] || exit 3\ncat > '%s'\n", saved) >
                0);
    FILE *out = fopen(script, "w");
    fputs(text, out);
    fclose(out);
    chmod(script, 0755);
    f->opts.nix_store = script;
    size_t n = 0;
    assert_ok(obi_nix_build_register(result, &f->opts, &n, err_ptr_));
    assert_int_equal(n, 3); /* top, dep's out, dep's dev */
    cleanup_free char *stream = NULL;
    size_t len = 0;
    assert_ok(obi_read_file(saved, 1 << 20, &stream, &len, err_ptr_));
    /* u64 1, the first NAR: references first, so dep's dev comes first */
    assert_true(len > 64);
    assert_int_equal(stream[0], 1);
    assert_memory_equal(stream + 16, "nix-archive-1", 13);
    const char *first_path = memmem(stream, len, "/nix/store/", 11);
    assert_non_null(first_path);
    assert_memory_equal(first_path, DEV, strlen(DEV));
    /* the end: u64 0 */
    for (size_t i = len - 8; i < len; i++)
        assert_int_equal(stream[i], 0);
    /* and the deriver of top */
    assert_non_null(memmem(stream, len, top, strlen(top)));
}

/* A stand-in nix-store: "--import" copies its stdin to saved (as it comes) and counts its runs
 * in saved.runs; with fail_message, it says that and fails instead. */
static char *stand_in_nix_store(fixture *f, const char *saved, const char *fail_message)
{
    char *script = NULL;
    cleanup_free char *text = NULL;
    assert_true(asprintf(&script, "%s/nix-store", f->dir) > 0);
    if (fail_message)
        assert_true(asprintf(&text, "#!/bin/sh\necho '%s' >&2\nexit 1\n", fail_message) > 0);
    else
        assert_true(asprintf(&text,
                             "#!/bin/sh\n[ \"$1\" = --import ] || exit 3\necho run >> '%s.runs'\n"
                             "exec cat > '%s'\n",
                             saved, saved) > 0);
    FILE *out = fopen(script, "w");
    fputs(text, out);
    fclose(out);
    chmod(script, 0755);
    return script;
}

/* The offsets of the paths of the export stream's entries: after each NAR, the magic 'NIXE'
 * and the path's length. */
static size_t export_entry_paths(const char *stream, size_t len, const char **paths, size_t max)
{
    size_t n = 0;
    for (const char *p = stream; n < max && (p = memmem(p, len - (size_t)(p - stream), "NIXE", 4));
         p += 4)
        paths[n++] = p + 8 + 8; /* the magic's u64, then the string's length */
    return n;
}

/* With register_in_nix, each build's outputs go to one nix-store --import while later builds
 * still run: top's build waits until dep's outputs have reached nix-store. References first,
 * each path once, the end marker last. */
static void test_nix_build_registers_outputs_while_building(void **state)
{
    fixture *f = *state;
    cleanup_free char *saved = NULL, *runs = NULL;
    assert_true(asprintf(&saved, "%s/export", f->dir) > 0);
    assert_true(asprintf(&runs, "%s/export.runs", f->dir) > 0);
    cleanup_free char *script = stand_in_nix_store(f, saved, NULL);
    cleanup_free char *extra = NULL;
    assert_true(
        asprintf(&extra, ",(\"wait_for_file\",\"%s\"),(\"wait_for_text\",\"" OUT "\")", saved) > 0);
    cleanup_free char *dep = write_dep(f);
    cleanup_free char *top = write_top_with(f, dep, extra);
    f->opts.nix_store = script;
    f->opts.register_in_nix = true;
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(top, &f->opts, &result, err_ptr_));
    assert_int_equal(result->n_built, 2);

    cleanup_free char *stream = NULL, *counted = NULL;
    size_t len = 0, runs_len = 0;
    assert_ok(obi_read_file(saved, 1 << 20, &stream, &len, err_ptr_));
    assert_ok(obi_read_file(runs, 1024, &counted, &runs_len, err_ptr_));
    assert_string_equal(counted, "run\n"); /* one nix-store for the whole call */
    const char *paths[8];
    assert_int_equal(export_entry_paths(stream, len, paths, 8), 3);
    assert_memory_equal(paths[0], DEV, strlen(DEV));
    assert_memory_equal(paths[1], OUT, strlen(OUT));
    assert_memory_equal(paths[2], TOP, strlen(TOP));
    for (size_t i = len - 8; i < len; i++)
        assert_int_equal(stream[i], 0);
    /* and recorded */
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    assert_ok(obi_nix_path_info_get(f->path_infos, TOP, &info, err_ptr_));
}

/* A nix-store --import that fails fails the call with its own words, after the builds' records
 * are written. */
static void test_nix_build_fails_when_nix_refuses_the_import(void **state)
{
    fixture *f = *state;
    cleanup_free char *script = stand_in_nix_store(f, NULL, "error: no room in this store");
    cleanup_free char *dep = write_dep(f);
    f->opts.nix_store = script;
    f->opts.register_in_nix = true;
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_build(dep, &f->opts, &result, &err), -EIO,
                      "--import failed (exit 1): error: no room in this store");
    assert_null(result);
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    assert_ok(obi_nix_path_info_get(f->path_infos, OUT, &info, err_ptr_));
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_nix_build_builds_input_derivations_first),
        T(test_nix_build_records_outputs_with_references),
        T(test_nix_build_valid_outputs_are_not_rebuilt),
        T(test_nix_build_prints_json_like_the_issue_says),
        T(test_nix_build_accepts_fixed_output_with_right_hash),
        T(test_nix_build_fails_fixed_output_with_wrong_hash_recording_nothing),
        T(test_nix_build_refuses_fixed_output_with_references),
        T(test_nix_build_refuses_executable_flat_fixed_output),
        T(test_nix_build_failure_keeps_code_and_records_nothing),
        T(test_nix_build_reports_input_that_is_nowhere),
        T(test_nix_build_input_failure_names_the_input),
        T(test_nix_build_runs_independent_derivations_at_once),
        T(test_nix_build_wakes_a_worker_for_each_node_made_ready),
        T(test_nix_build_runs_one_at_a_time_with_one_job),
        T(test_nix_build_first_failure_stops_the_rest),
        T(test_nix_build_passes_keep_failed_to_the_builder),
        T(test_nix_build_finds_references_in_file_names),
        T(test_nix_build_enforces_allowed_references),
        T(test_nix_build_refuses_cycles_between_outputs),
        T(test_nix_build_refuses_what_this_machine_cannot_build),
        T(test_nix_build_floating_output_gets_its_content_address),
        T(test_nix_build_resolves_derivations_on_content_addressed_inputs),
        T(test_nix_build_register_streams_an_export_to_nix_store),
        T(test_nix_build_registers_outputs_while_building),
        T(test_nix_build_fails_when_nix_refuses_the_import),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
