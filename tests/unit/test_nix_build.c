/*
 * Unit tests for building derivations with a stand-in build service (it writes each output as
 * a file whose contents come from the derivation's env "content_<output>", and reports the
 * needles those contents contain, as the reference scanner would): input derivations built
 * first and reused after, the closure from the own store, references, NAR hashes, fixed-output
 * checks, failures recording nothing, and the JSON that `ocibuild nix-build` prints.
 */
#include "test_helpers.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/json_util.h"
#include "ocibuild/nix_build.h"
#include "ocibuild/nix_output.h"

#define DEV "/nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev"
#define OUT "/nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep"
#define TOP "/nix/store/vaf1hazi08dqf253k9wp3qr1xwdpapz9-top"
#define FOD "/nix/store/9q0mqp4y1k819ysjzsfjah1ld74x19w2-fod"

/* ---- the stand-in build service ---- */

typedef struct fake_builder {
    obi_build_service base;
    obi_store *store;
    int builds;
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

static int fake_do_build(obi_build_service *svc, const obi_build_request *req,
                         const obi_build_call *call, obi_build **out, obi_error **err)
{
    (void)call;
    fake_builder *f = (fake_builder *)svc;
    f->builds++;
    obi_build_request_free(f->last);
    f->last = NULL;
    assert_ok(obi_build_request_copy(req, &f->last, err_ptr_));
    assert_ok(obi_build_request_validate(req, err_ptr_));
    if (env_get(req, "fail"))
        return obi_error_set(err, OBI_EBUILD_FAILED, "builder exited with code 1");
    obi_build *build = calloc(1, sizeof *build);
    build->outputs = calloc(req->n_outputs, sizeof *build->outputs);
    build->outputs_needles = calloc(req->n_outputs, sizeof *build->outputs_needles);
    assert_ok(obi_build_request_copy(req, &build->request, err_ptr_));
    for (size_t i = 0; i < req->n_outputs; i++) {
        cleanup_free char *path = NULL, *key = NULL;
        assert_true(asprintf(&path, "/%s", req->outputs[i]) > 0);
        const char *name = output_name(req, path);
        assert_non_null(name);
        assert_true(asprintf(&key, "content_%s", name) > 0);
        const char *content = env_get(req, key);
        if (!content)
            content = "";
        obi_digest digest;
        assert_ok(obi_blob_put_bytes(f->store->blobs, content, strlen(content), &digest, err_ptr_));
        const char *base = strrchr(path, '/') + 1;
        assert_int_equal(obi_node_init_file(&build->outputs[i], base, strlen(base), &digest,
                                            strlen(content), false),
                         0);
        build->n_outputs++;
        obi_output_needles *found = &build->outputs_needles[i];
        found->needles = calloc(req->n_refscan_needles + 1, sizeof *found->needles);
        for (size_t k = 0; k < req->n_refscan_needles; k++)
            if (strstr(content, req->refscan_needles[k]))
                found->needles[found->n_needles++] = k;
    }
    *out = build;
    return 0;
}

static void fake_free(obi_build_service *svc)
{
    (void)svc;
}

static const struct obi_build_service_ops FAKE_OPS = {fake_do_build, fake_free};

/* ---- fixture ---- */

typedef struct fixture {
    char *dir;
    obi_store store;
    fake_builder builder;
    obi_nix_path_info_store *path_infos;
    obi_nix_build_options opts;
    char *empty_store;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    assert_ok(obi_memory_blob_service_new(&f->store.blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&f->store.directories, err_ptr_));
    f->builder.base.ops = &FAKE_OPS;
    f->builder.store = &f->store;
    cleanup_free char *pi = NULL;
    assert_true(asprintf(&pi, "%s/path-info", f->dir) > 0);
    assert_ok(obi_nix_path_info_store_open(pi, &f->path_infos, err_ptr_));
    assert_true(asprintf(&f->empty_store, "%s/empty-store", f->dir) > 0);
    assert_int_equal(mkdir(f->empty_store, 0755), 0);
    f->opts = (obi_nix_build_options){
        .store = &f->store,
        .builder = &f->builder.base,
        .path_infos = f->path_infos,
        .nix_store = "/nonexistent/nix-store", /* never needed: nothing is in empty_store */
        .nix_store_dir = f->empty_store,
        .build_cores = 1,
    };
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    obi_build_request_free(f->builder.last);
    obi_nix_path_info_store_close(f->path_infos);
    obi_blob_service_free(f->store.blobs);
    obi_directory_service_free(f->store.directories);
    obi_test_tmpdir_remove(f->dir);
    free(f->empty_store);
    free(f);
    return 0;
}

static char *write_drv(fixture *f, const char *name, const char *text)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", f->dir, name) > 0);
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    fputs(text, file);
    fclose(file);
    return path;
}

/* dep: "dev" refers to itself, "out" refers to "dev". */
static char *write_dep(fixture *f)
{
    return write_drv(f, "dep.drv",
                     "Derive([(\"dev\",\"" DEV "\",\"\",\"\"),(\"out\",\"" OUT "\",\"\",\"\")],"
                     "[],[],\"x86_64-linux\",\"/b\",[],[(\"content_dev\",\"me: " DEV "\"),"
                     "(\"content_out\",\"needs " DEV "\"),(\"dev\",\"" DEV "\"),(\"out\",\"" OUT
                     "\")])");
}

/* top: uses dep's "out" and refers to it. */
static char *write_top(fixture *f, const char *dep_path)
{
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "Derive([(\"out\",\"" TOP "\",\"\",\"\")],[(\"%s\",[\"out\"])],[],"
                         "\"x86_64-linux\",\"/b\",[],[(\"content_out\",\"uses " OUT "\"),"
                         "(\"out\",\"" TOP "\")])",
                         dep_path) > 0);
    return write_drv(f, "top.drv", text);
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
    /* top's inputs: dep's out and, through its references, dep's dev */
    assert_int_equal(f->builder.last->n_inputs, 2);
    assert_string_equal((const char *)f->builder.last->inputs[0].name.data, DEV + 11);
    assert_string_equal((const char *)f->builder.last->inputs[1].name.data, OUT + 11);

    assert_int_equal(result->n_outputs, 1);
    assert_string_equal(result->outputs[0].name, "out");
    assert_string_equal(result->outputs[0].info->path, TOP);
    assert_int_equal(result->outputs[0].info->n_references, 1);
    assert_string_equal(result->outputs[0].info->references[0], OUT);
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
    assert_string_equal((const char *)out->node.name.data, OUT + 11);
}

static void test_nix_build_reuses_outputs_it_built_before(void **state)
{
    fixture *f = *state;
    cleanup_free char *dep = write_dep(f);
    cleanup_free char *top = write_top(f, dep);
    cleanup_nix_build_result obi_nix_build_result *first = NULL, *second = NULL;
    assert_ok(obi_nix_build(top, &f->opts, &first, err_ptr_));
    assert_int_equal(f->builder.builds, 2);
    assert_ok(obi_nix_build(top, &f->opts, &second, err_ptr_));
    assert_int_equal(f->builder.builds, 3); /* only top again */
    assert_memory_equal(first->outputs[0].info->nar.sha256, second->outputs[0].info->nar.sha256,
                        32);
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

static char *write_fod(fixture *f, const char *hash, const char *content)
{
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "Derive([(\"out\",\"" FOD "\",\"sha256\",\"%s\")],[],[],\"x86_64-linux\","
                         "\"/b\",[],[(\"content_out\",\"%s\"),(\"out\",\"" FOD "\")])",
                         hash, content) > 0);
    return write_drv(f, "fod.drv", text);
}

static void test_nix_build_accepts_fixed_output_with_right_hash(void **state)
{
    fixture *f = *state;
    cleanup_free char *fod =
        write_fod(f, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "hello");
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    assert_ok(obi_nix_build(fod, &f->opts, &result, err_ptr_));
    assert_true(f->builder.last->constraints.network_access);
    assert_int_equal(result->outputs[0].info->n_references, 0);
}

static void test_nix_build_fails_fixed_output_with_wrong_hash_recording_nothing(void **state)
{
    fixture *f = *state;
    cleanup_free char *fod =
        write_fod(f, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "hellp");
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

static void test_nix_build_refuses_fixed_output_with_references(void **state)
{
    fixture *f = *state;
    /* the right hash, but the contents name the output's own hash part */
    cleanup_free char *fod =
        write_fod(f, "32a2d29bdc81ecb6068f84ea8f8ae389d1dd37978126a4343092b9347f80eca4",
                  "x 9q0mqp4y1k819ysjzsfjah1ld74x19w2");
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_build(fod, &f->opts, &result, &err), -EINVAL,
                      "fixed-output derivation '" FOD "' must not reference store paths (it "
                      "references " FOD ")");
}

static void test_nix_build_failure_keeps_code_and_records_nothing(void **state)
{
    fixture *f = *state;
    cleanup_free char *drv =
        write_drv(f, "fail.drv",
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
        write_drv(f, "lost.drv",
                  "Derive([(\"out\",\"" TOP "\",\"\",\"\")],[],[\"/nix/store/"
                  "0a1ssdzzwb0c0hw63bkyfcml0qqn0c2x-lib\"],\"x86_64-linux\",\"/b\",[],[])");
    obi_nix_build_result *result = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_build(drv, &f->opts, &result, &err), -ENOENT,
                      "/nix/store/0a1ssdzzwb0c0hw63bkyfcml0qqn0c2x-lib is neither in the Nix "
                      "store nor built by ocibuild");
    assert_int_equal(f->builder.builds, 0);
}

static void test_nix_build_input_failure_names_the_input(void **state)
{
    fixture *f = *state;
    cleanup_free char *dep =
        write_drv(f, "dep.drv",
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

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_nix_build_builds_input_derivations_first),
        T(test_nix_build_records_outputs_with_references),
        T(test_nix_build_reuses_outputs_it_built_before),
        T(test_nix_build_prints_json_like_the_issue_says),
        T(test_nix_build_accepts_fixed_output_with_right_hash),
        T(test_nix_build_fails_fixed_output_with_wrong_hash_recording_nothing),
        T(test_nix_build_refuses_fixed_output_with_references),
        T(test_nix_build_failure_keeps_code_and_records_nothing),
        T(test_nix_build_reports_input_that_is_nowhere),
        T(test_nix_build_input_failure_names_the_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
