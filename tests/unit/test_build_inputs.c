/*
 * Build inputs and the friendly request form: the per-node input cache (materialized once,
 * hard links from the on-disk store for non-executable files, copies for executables), the
 * bundle's inputs/<name> symlinks, symlink inputs placed in the scratch dir, and the friendly
 * JSON form (host paths imported, env strings, sorting, errors naming the key).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/build_inputs.h"
#include "ocibuild/build_outputs.h"
#include "ocibuild/fs.h"
#include "ocibuild/friendly_request.h"
#include "ocibuild/ingest.h"
#include "ocibuild/spec.h"
#include "ocibuild/store.h"
#include "test_helpers.h"

typedef struct fixture {
    char *dir;
    obi_store *store;
    char *cache;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    char *store_path = obi_path_join(f->dir, "store");
    f->cache = obi_path_join(f->dir, "cache");
    int r = obi_store_open(store_path, store_path, &f->store, NULL);
    free(store_path);
    *state = f;
    return r;
}

static int teardown(void **state)
{
    fixture *f = *state;
    obi_store_close(f->store);
    free(f->cache);
    obi_test_tmpdir_remove(f->dir);
    free(f);
    return 0;
}

/* Writes a small tree (a file, an executable, a subdir) and ingests it. */
static void make_input(fixture *f, const char *name, obi_node *out)
{
    char *root = obi_path_join(f->dir, name);
    char *sub = obi_path_join(root, "sub");
    char *file = obi_path_join(root, "data.txt");
    char *exe = obi_path_join(sub, "run");
    assert_ok(obi_mkdir_p(sub, 0755, err_ptr_));
    assert_ok(obi_write_file(file, "data\n", 5, 0644, err_ptr_));
    assert_ok(obi_write_file(exe, "#!/bin/sh\n", 10, 0755, err_ptr_));
    obi_ingest_options options = {.name = name, .refscan = NULL};
    assert_ok(
        obi_ingest_path(f->store->blobs, f->store->directories, root, &options, out, err_ptr_));
    free(root);
    free(sub);
    free(file);
    free(exe);
}

static void test_input_cache_materializes_once_and_reuses(void **state)
{
    fixture *f = *state;
    obi_node node;
    make_input(f, "tree", &node);
    char *first = NULL, *second = NULL;
    assert_ok(obi_input_cache_get(f->store, f->cache, &node, NULL, &first, err_ptr_));
    struct stat st1, st2;
    assert_int_equal(stat(first, &st1), 0);
    assert_true(S_ISDIR(st1.st_mode));
    assert_int_equal(st1.st_mode & 0777, 0555);
    assert_ok(obi_input_cache_get(f->store, f->cache, &node, NULL, &second, err_ptr_));
    assert_string_equal(first, second);
    assert_int_equal(stat(second, &st2), 0);
    assert_int_equal(st1.st_ino, st2.st_ino); /* not materialized again */
    free(first);
    free(second);
    obi_node_clear(&node);
}

static void test_input_cache_hard_links_plain_files_and_copies_executables(void **state)
{
    fixture *f = *state;
    obi_node node;
    make_input(f, "tree", &node);
    char *entry = NULL;
    assert_ok(obi_input_cache_get(f->store, f->cache, &node, NULL, &entry, err_ptr_));
    char *data = obi_path_join(entry, "data.txt");
    char *run = obi_path_join(entry, "sub/run");
    struct stat st;
    assert_int_equal(stat(data, &st), 0);
    assert_true(st.st_nlink >= 2); /* shares the store's blob file */
    assert_int_equal(st.st_mode & 0777, 0444);
    assert_int_equal(stat(run, &st), 0);
    assert_int_equal(st.st_nlink, 1);
    assert_int_equal(st.st_mode & 0777, 0555);
    free(data);
    free(run);
    free(entry);
    obi_node_clear(&node);
}

static obi_build_request *request_with_inputs(obi_node *inputs, size_t n, const char *inputs_dir)
{
    obi_build_request *req = obi_build_request_new();
    req->inputs = calloc(n, sizeof *req->inputs);
    for (size_t i = 0; i < n; i++)
        obi_node_copy(&req->inputs[i], &inputs[i]);
    req->n_inputs = n;
    free(req->inputs_dir);
    req->inputs_dir = strdup(inputs_dir);
    req->scratch_paths = calloc(2, sizeof(char *));
    req->scratch_paths[0] = strdup("build");
    req->scratch_paths[1] = strdup("nix/store");
    req->n_scratch_paths = 2;
    return req;
}

static void test_inputs_prepare_links_cache_entries_and_places_symlinks(void **state)
{
    fixture *f = *state;
    obi_node nodes[2];
    make_input(f, "aaa-tree", &nodes[0]);
    assert_ok(obi_node_init_symlink(&nodes[1], "bbb-link", 8, "aaa-tree/sub", 12));
    obi_build_request *req = request_with_inputs(nodes, 2, "nix/store");
    char *bundle = obi_path_join(f->dir, "bundle");
    char *inputs = obi_path_join(bundle, "inputs");
    char sname[OBI_SCRATCH_NAME_LEN + 1];
    obi_scratch_name("nix/store", sname);
    char *scratch = NULL;
    assert_true(asprintf(&scratch, "%s/scratch/%s", bundle, sname) > 0);
    assert_ok(obi_mkdir_p(scratch, 0755, err_ptr_));
    assert_ok(obi_build_inputs_prepare(f->store, f->cache, req, inputs, bundle, NULL, err_ptr_));

    char *link = obi_path_join(inputs, "aaa-tree");
    char target[4096] = {0};
    assert_true(readlink(link, target, sizeof target - 1) > 0);
    assert_non_null(strstr(target, f->cache));
    char *placed = obi_path_join(scratch, "bbb-link");
    memset(target, 0, sizeof target);
    assert_true(readlink(placed, target, sizeof target - 1) > 0);
    assert_string_equal(target, "aaa-tree/sub");
    char *not_mounted = obi_path_join(inputs, "bbb-link");
    struct stat st;
    assert_int_equal(lstat(not_mounted, &st), -1);

    free(link);
    free(placed);
    free(not_mounted);
    free(scratch);
    free(inputs);
    free(bundle);
    obi_build_request_free(req);
    obi_node_clear(&nodes[0]);
    obi_node_clear(&nodes[1]);
}

/* A file input is hard-linked to its cache entry (no data block per build), a directory input
 * is a symlink to its entry. */
static void test_inputs_prepare_hard_links_file_inputs(void **state)
{
    fixture *f = *state;
    char *path = obi_path_join(f->dir, "tool");
    assert_ok(obi_write_file(path, "#!/bin/sh\necho tool\n", 20, 0755, err_ptr_));
    obi_node nodes[2];
    make_input(f, "a-tree", &nodes[0]);
    obi_ingest_options options = {.name = "b-tool", .refscan = NULL};
    assert_ok(obi_ingest_path(f->store->blobs, f->store->directories, path, &options, &nodes[1],
                              err_ptr_));
    obi_build_request *req = request_with_inputs(nodes, 2, "inputs");
    char *bundle = obi_path_join(f->dir, "bundle");
    char *inputs = obi_path_join(bundle, "inputs");
    assert_ok(obi_mkdir_p(bundle, 0755, err_ptr_));
    assert_ok(obi_build_inputs_prepare(f->store, f->cache, req, inputs, bundle, NULL, err_ptr_));

    char *entry = NULL;
    assert_ok(obi_input_cache_get(f->store, f->cache, &nodes[1], NULL, &entry, err_ptr_));
    char *tool = obi_path_join(inputs, "b-tool");
    struct stat in_bundle, in_cache;
    assert_int_equal(lstat(tool, &in_bundle), 0);
    assert_int_equal(stat(entry, &in_cache), 0);
    assert_true(S_ISREG(in_bundle.st_mode));
    assert_int_equal(in_bundle.st_ino, in_cache.st_ino);
    assert_true(in_bundle.st_mode & S_IXUSR);
    char *tree = obi_path_join(inputs, "a-tree");
    assert_int_equal(lstat(tree, &in_bundle), 0);
    assert_true(S_ISLNK(in_bundle.st_mode));

    free(tree);
    free(tool);
    free(entry);
    free(inputs);
    free(bundle);
    free(path);
    obi_build_request_free(req);
    obi_node_clear(&nodes[0]);
    obi_node_clear(&nodes[1]);
}

typedef struct progress_seen {
    uint64_t bytes, files;
    unsigned reports, ends;
    bool went_back; /* a report with fewer bytes than the one before */
} progress_seen;

static void seen_report(void *ctx, uint64_t bytes, uint64_t files)
{
    progress_seen *seen = ctx;
    seen->went_back |= bytes < seen->bytes;
    seen->bytes = bytes;
    seen->files = files;
    seen->reports++;
}

static void seen_end(void *ctx)
{
    ((progress_seen *)ctx)->ends++;
}

/* Materialization reports its bytes summed over a build's inputs, then its end; inputs already
 * in the cache report nothing but the end. */
static void test_inputs_prepare_reports_materialization_progress(void **state)
{
    fixture *f = *state;
    char *path = obi_path_join(f->dir, "tool");
    assert_ok(obi_write_file(path, "#!/bin/sh\necho tool\n", 20, 0755, err_ptr_));
    obi_node nodes[2];
    make_input(f, "a-tree", &nodes[0]); /* 5 + 10 bytes */
    obi_ingest_options options = {.name = "b-tool", .refscan = NULL};
    assert_ok(obi_ingest_path(f->store->blobs, f->store->directories, path, &options, &nodes[1],
                              err_ptr_));
    obi_build_request *req = request_with_inputs(nodes, 2, "inputs");
    char *bundle = obi_path_join(f->dir, "bundle");
    char *inputs = obi_path_join(bundle, "inputs");
    assert_ok(obi_mkdir_p(bundle, 0755, err_ptr_));
    progress_seen seen = {0};
    obi_progress progress = {seen_report, &seen, seen_end};
    assert_ok(
        obi_build_inputs_prepare(f->store, f->cache, req, inputs, bundle, &progress, err_ptr_));
    assert_int_equal(seen.bytes, 35);
    assert_true(seen.files >= 3);
    assert_false(seen.went_back);
    assert_int_equal(seen.ends, 1);

    char *again = obi_path_join(f->dir, "bundle2");
    char *again_inputs = obi_path_join(again, "inputs");
    assert_ok(obi_mkdir_p(again, 0755, err_ptr_));
    unsigned reports = seen.reports;
    assert_ok(obi_build_inputs_prepare(f->store, f->cache, req, again_inputs, again, &progress,
                                       err_ptr_));
    assert_int_equal(seen.reports, reports);
    assert_int_equal(seen.ends, 2);

    free(again_inputs);
    free(again);
    free(inputs);
    free(bundle);
    free(path);
    obi_build_request_free(req);
    obi_node_clear(&nodes[0]);
    obi_node_clear(&nodes[1]);
}

static void test_inputs_symlink_outside_scratch_is_refused(void **state)
{
    fixture *f = *state;
    obi_node node;
    assert_ok(obi_node_init_symlink(&node, "lnk", 3, "x", 1));
    obi_build_request *req = request_with_inputs(&node, 1, "inputs");
    char *bundle = obi_path_join(f->dir, "bundle2");
    char *inputs = obi_path_join(bundle, "inputs");
    assert_ok(obi_mkdir_p(bundle, 0755, err_ptr_));
    obi_error *err = NULL;
    assert_fails_with(err,
                      obi_build_inputs_prepare(f->store, f->cache, req, inputs, bundle, NULL, &err),
                      -EINVAL, "inputs[0]: input \"lnk\" is a symlink");
    free(inputs);
    free(bundle);
    obi_build_request_free(req);
    obi_node_clear(&node);
}

static void test_friendly_request_imports_paths_and_sorts_env(void **state)
{
    fixture *f = *state;
    char *file = obi_path_join(f->dir, "tool");
    assert_ok(obi_write_file(file, "tool", 4, 0755, err_ptr_));
    json_t *json =
        json_pack("{s:{s:s, s:s}, s:[s], s:s, s:[s], s:s, s:[s], s:{s:s, s:s}}", "inputs",
                  "zz-tool", file, "aa-tool", file, "command_args", "/nix/store/aa-tool",
                  "working_dir", "build", "scratch_paths", "nix/store", "inputs_dir", "nix/store",
                  "outputs", "nix/store/out", "env", "ZED", "last", "ALPHA", "first");
    obi_build_request *req = NULL;
    assert_ok(obi_friendly_request_from_json(json, f->store, &req, err_ptr_));
    assert_int_equal(req->n_inputs, 2);
    assert_string_equal((char *)req->inputs[0].name.data, "aa-tool");
    assert_string_equal((char *)req->inputs[1].name.data, "zz-tool");
    assert_int_equal(req->inputs[0].kind, OBI_NODE_FILE);
    assert_true(req->inputs[0].executable);
    assert_int_equal(obi_blob_has(f->store->blobs, &req->inputs[0].digest, NULL), 1);
    assert_int_equal(req->n_environment_vars, 2);
    assert_string_equal(req->environment_vars[0].key, "ALPHA");
    assert_memory_equal(req->environment_vars[0].value.data, "first", 5);
    assert_ok(obi_build_request_validate(req, err_ptr_));
    obi_build_request_free(req);
    json_decref(json);
    free(file);
}

static void test_friendly_request_paths_are_relative_to_the_request_file(void **state)
{
    fixture *f = *state;
    char *sub = obi_path_join(f->dir, "project");
    assert_int_equal(mkdir(sub, 0755), 0);
    char *tool = obi_path_join(sub, "tool");
    assert_ok(obi_write_file(tool, "relative tool", 13, 0755, err_ptr_));
    char *request = obi_path_join(sub, "req.json");
    const char *text = "{\"inputs\": {\"tool\": \"tool\"}, \"command_args\": [\"/nix/store/tool\"],"
                       " \"working_dir\": \"build\", \"scratch_paths\": [\"nix/store\"],"
                       " \"inputs_dir\": \"nix/store\", \"outputs\": [\"nix/store/out\"]}";
    assert_ok(obi_write_file(request, text, strlen(text), 0644, err_ptr_));
    /* The current directory has no "tool": only the request's directory does. */
    obi_build_request *req = NULL;
    assert_ok(obi_friendly_request_load(request, f->store, NULL, &req, err_ptr_));
    assert_int_equal(req->n_inputs, 1);
    assert_int_equal(req->inputs[0].size, 13);
    obi_build_request_free(req);
    free(request);
    free(tool);
    free(sub);
}

static void test_build_outputs_export_refuses_two_outputs_of_one_name(void **state)
{
    fixture *f = *state;
    obi_digest empty = {0};
    obi_node nodes[2];
    assert_int_equal(obi_node_init_file(&nodes[0], "out", 3, &empty, 0, false), 0);
    assert_int_equal(obi_node_init_file(&nodes[1], "out", 3, &empty, 0, false), 0);
    obi_build build = {.outputs = nodes, .n_outputs = 2};
    char *dir = obi_path_join(f->dir, "results");
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_outputs_export(f->store, &build, dir, NULL, &err), -EEXIST,
                      "outputs 0 and 1 are both named \"out\"");
    assert_int_equal(access(dir, F_OK), -1); /* refused before anything was written */
    free(dir);
    obi_node_clear(&nodes[0]);
    obi_node_clear(&nodes[1]);
}

/* Imports path as input "tool" through the friendly form; *out is the node. */
static void friendly_import(fixture *f, const char *path, obi_node *out)
{
    json_t *json =
        json_pack("{s:{s:s}, s:[s], s:s, s:[s], s:s, s:[s]}", "inputs", "tool", path,
                  "command_args", "/nix/store/tool", "working_dir", "build", "scratch_paths",
                  "nix/store", "inputs_dir", "nix/store", "outputs", "nix/store/out");
    obi_build_request *req = NULL;
    assert_ok(obi_friendly_request_from_json(json, f->store, &req, err_ptr_));
    assert_int_equal(req->n_inputs, 1);
    assert_int_equal(obi_node_copy(out, &req->inputs[0]), 0);
    obi_build_request_free(req);
    json_decref(json);
}

static void assert_same_as_ingest(fixture *f, const char *path, const obi_node *node)
{
    obi_node expected;
    obi_ingest_options options = {.name = "tool", .refscan = NULL};
    assert_ok(obi_ingest_path(f->store->blobs, f->store->directories, path, &options, &expected,
                              err_ptr_));
    assert_int_equal(node->kind, OBI_NODE_FILE);
    assert_true(obi_digest_equal(&node->digest, &expected.digest));
    assert_int_equal(node->size, expected.size);
    assert_int_equal(node->executable, expected.executable);
    assert_string_equal((char *)node->name.data, "tool");
    obi_node_clear(&expected);
}

static void test_friendly_request_file_already_in_store_gives_the_ingest_node(void **state)
{
    fixture *f = *state;
    char *file = obi_path_join(f->dir, "tool");
    assert_ok(obi_write_file(file, "tool v1", 7, 0755, err_ptr_));
    obi_node first, again, plain, changed;
    friendly_import(f, file, &first); /* new to the store: ingested */
    assert_true(first.executable);
    friendly_import(f, file, &again); /* present: only hashed */
    assert_same_as_ingest(f, file, &again);
    assert_true(obi_digest_equal(&first.digest, &again.digest));

    assert_int_equal(chmod(file, 0644), 0);
    friendly_import(f, file, &plain);
    assert_false(plain.executable);
    assert_same_as_ingest(f, file, &plain);

    assert_ok(obi_write_file(file, "tool v2, longer", 15, 0755, err_ptr_));
    friendly_import(f, file, &changed);
    assert_false(obi_digest_equal(&changed.digest, &first.digest));
    assert_int_equal(changed.size, 15);
    assert_int_equal(obi_blob_has(f->store->blobs, &changed.digest, NULL), 1);
    assert_same_as_ingest(f, file, &changed);
    obi_node_clear(&first);
    obi_node_clear(&again);
    obi_node_clear(&plain);
    obi_node_clear(&changed);
    free(file);
}

static void test_friendly_request_errors_name_the_key(void **state)
{
    fixture *f = *state;
    obi_error *err = NULL;
    obi_build_request *req = NULL;
    json_t *bad_input = json_pack("{s:{s:i}}", "inputs", "x", 1);
    assert_fails_with(err, obi_friendly_request_from_json(bad_input, f->store, &req, &err), -EINVAL,
                      "inputs.x");
    json_t *missing = json_pack("{s:{s:s}}", "inputs", "x", "/nonexistent/path/for/test");
    assert_fails_with(err, obi_friendly_request_from_json(missing, f->store, &req, &err), -ENOENT,
                      "inputs.x");
    json_t *both =
        json_pack("{s:{s:s}, s:[{s:s}]}", "env", "A", "b", "environment_vars", "key", "A");
    assert_fails_with(err, obi_friendly_request_from_json(both, f->store, &req, &err), -EINVAL,
                      "not both");
    json_t *env_number = json_pack("{s:{s:i}}", "env", "A", 3);
    assert_fails_with(err, obi_friendly_request_from_json(env_number, f->store, &req, &err),
                      -EINVAL, "env.A");
    assert_null(req);
    json_decref(bad_input);
    json_decref(missing);
    json_decref(both);
    json_decref(env_number);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_friendly_request_file_already_in_store_gives_the_ingest_node, setup, teardown),
        cmocka_unit_test_setup_teardown(test_input_cache_materializes_once_and_reuses, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_input_cache_hard_links_plain_files_and_copies_executables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inputs_prepare_links_cache_entries_and_places_symlinks,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_inputs_prepare_hard_links_file_inputs, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_inputs_prepare_reports_materialization_progress, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_inputs_symlink_outside_scratch_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_friendly_request_paths_are_relative_to_the_request_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_outputs_export_refuses_two_outputs_of_one_name,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_friendly_request_imports_paths_and_sorts_env, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_friendly_request_errors_name_the_key, setup, teardown),
    };
    return cmocka_run_group_tests_name("build_inputs", tests, NULL, NULL);
}
