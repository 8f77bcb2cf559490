/*
 * Unit tests for src/rpc: a server on a unix socket in a temp dir serving memory stores and a
 * fake build service, reached through the grpc+unix clients (so both halves run under ASan),
 * plus the status mapping and message clipping.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/rpc/rpc_internal.h"
#include "ocibuild/build_service.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/request.h"
#include "ocibuild/rpc.h"
#include "ocibuild/store.h"
#include "test_helpers.h"

/* ---- a fake build service: behaviour chosen by command_args[0] ---- */

static int fake_do_build(obi_build_service *svc, const obi_build_request *req, obi_build **out,
                         obi_error **err)
{
    (void)svc;
    const char *what = req->command_args[0];
    if (!strcmp(what, "fail")) {
        char log[5000];
        memset(log, 'l', sizeof log - 1);
        log[sizeof log - 1] = '\0';
        return obi_error_set(err, OBI_EBUILD_FAILED, "build failed: exit code 3\n%sLOG-END", log);
    }
    if (!strcmp(what, "timeout"))
        return obi_error_set(err, -ETIMEDOUT, "build timed out after 1s");
    obi_build *build = calloc(1, sizeof *build);
    assert_non_null(build);
    assert_int_equal(obi_build_request_copy(req, &build->request, NULL), 0);
    build->n_outputs = 1;
    build->outputs = calloc(1, sizeof *build->outputs);
    build->outputs_needles = calloc(1, sizeof *build->outputs_needles);
    obi_digest d;
    obi_digest_of("x", 1, &d);
    assert_int_equal(obi_node_init_file(&build->outputs[0], "out", 3, &d, 1, false), 0);
    *out = build;
    return 0;
}

static void fake_free(obi_build_service *svc)
{
    free(svc);
}

static const struct obi_build_service_ops FAKE_OPS = {.do_build = fake_do_build, .free = fake_free};

/* ---- fixture: one server for the whole group ---- */

typedef struct fixture {
    char *dir;
    char *url;
    obi_blob_service *server_blobs;
    obi_directory_service *server_directories;
    obi_build_service *server_builds;
    obi_rpc_server *server;
    obi_blob_service *blobs;
    obi_directory_service *directories;
    obi_build_service *builds;
    unsigned put_calls; /* BlobService/Put calls the server logged */
} fixture;

static fixture F;

static void count_puts(void *ctx, obi_log_level level, const char *line)
{
    (void)level;
    if (strstr(line, "/tvix.castore.v1.BlobService/Put "))
        __atomic_add_fetch((unsigned *)ctx, 1, __ATOMIC_SEQ_CST);
}

static int group_setup(void **state)
{
    (void)state;
    F.dir = obi_test_tmpdir();
    char address[512];
    snprintf(address, sizeof address, "unix:%s/rpc.sock", F.dir);
    if (asprintf(&F.url, "grpc+unix://%s/rpc.sock", F.dir) < 0)
        return -1;
    assert_ok(obi_rpc_init(err_ptr_));
    assert_ok(obi_memory_blob_service_new(&F.server_blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&F.server_directories, err_ptr_));
    F.server_builds = calloc(1, sizeof *F.server_builds);
    F.server_builds->ops = &FAKE_OPS;
    obi_rpc_server_options options = {
        .blobs = F.server_blobs,
        .directories = F.server_directories,
        .builds = F.server_builds,
        .castore_workers = 2,
        .build_workers = 1,
        .log_level = OBI_LOG_INFO,
        .log = count_puts,
        .log_ctx = &F.put_calls,
    };
    assert_ok(obi_rpc_server_new(&options, &F.server, err_ptr_));
    assert_ok(obi_rpc_server_listen(F.server, address, NULL, err_ptr_));
    assert_ok(obi_rpc_server_start(F.server, err_ptr_));
    assert_ok(obi_blob_service_open(F.url, &F.blobs, err_ptr_));
    assert_ok(obi_directory_service_open(F.url, &F.directories, err_ptr_));
    assert_ok(obi_build_service_open(F.url, NULL, &F.builds, err_ptr_));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    obi_build_service_free(F.builds);
    obi_directory_service_free(F.directories);
    obi_blob_service_free(F.blobs);
    assert_ok(obi_rpc_server_shutdown(F.server, 1000, err_ptr_));
    obi_rpc_server_free(F.server);
    obi_build_service_free(F.server_builds);
    obi_directory_service_free(F.server_directories);
    obi_blob_service_free(F.server_blobs);
    free(F.url);
    obi_test_tmpdir_remove(F.dir);
    grpc_shutdown_blocking();
    return 0;
}

/* ---- blobs ---- */

static void test_rpc_blob_roundtrips_in_several_chunks(void **state)
{
    (void)state;
    size_t len = 3 * OBI_RPC_CHUNK_SIZE + 77;
    uint8_t *data = malloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)(i * 7 + (i >> 13));
    obi_digest put, want;
    obi_digest_of(data, len, &want);
    assert_ok(obi_blob_put_bytes(F.blobs, data, len, &put, err_ptr_));
    assert_memory_equal(put.bytes, want.bytes, OBI_DIGEST_LEN);
    assert_int_equal(obi_blob_has(F.server_blobs, &want, NULL), 1);
    assert_int_equal(obi_blob_has(F.blobs, &want, NULL), 1);
    uint8_t *back = NULL;
    size_t back_len = 0;
    assert_ok(obi_blob_get_bytes(F.blobs, &want, SIZE_MAX, &back, &back_len, err_ptr_));
    assert_int_equal(back_len, len);
    assert_memory_equal(back, data, len);
    free(back);
    free(data);
}

static void test_rpc_blob_missing_is_absent_and_enoent(void **state)
{
    (void)state;
    obi_digest d;
    memset(d.bytes, 0x42, sizeof d.bytes);
    assert_int_equal(obi_blob_has(F.blobs, &d, NULL), 0);
    obi_error *err = NULL;
    obi_blob_reader *reader = NULL;
    assert_fails_with(err, obi_blob_open_read(F.blobs, &d, &reader, &err), -ENOENT, "not found");
    assert_null(reader);
}

static void test_rpc_blob_unfinished_writer_stores_nothing(void **state)
{
    (void)state;
    /* Larger than the client's spool, so the Put stream has started when it is abandoned. */
    size_t len = 5 * OBI_RPC_CHUNK_SIZE + 3;
    uint8_t *data = malloc(len);
    memset(data, 0x5a, len);
    obi_digest d;
    obi_digest_of(data, len, &d);
    obi_blob_writer *writer = NULL;
    assert_ok(obi_blob_open_write(F.blobs, &writer, err_ptr_));
    assert_ok(obi_blob_write(writer, data, len, err_ptr_));
    obi_blob_writer_close(writer);
    free(data);
    /* The cancellation reaches the server asynchronously: ask a few times. */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(obi_blob_has(F.server_blobs, &d, NULL), 0);
        usleep(5000);
    }
}

static void test_rpc_blob_already_stored_is_not_uploaded_again(void **state)
{
    (void)state;
    static const char text[] = "uploaded once";
    obi_digest first, second;
    assert_ok(obi_blob_put_bytes(F.blobs, text, sizeof text - 1, &first, err_ptr_));
    /* The server logs a call just after answering it: let those lines arrive. */
    usleep(100000);
    unsigned puts_before = __atomic_load_n(&F.put_calls, __ATOMIC_SEQ_CST);
    assert_true(puts_before > 0);
    assert_ok(obi_blob_put_bytes(F.blobs, text, sizeof text - 1, &second, err_ptr_));
    assert_memory_equal(first.bytes, second.bytes, OBI_DIGEST_LEN);
    usleep(100000);
    assert_int_equal(__atomic_load_n(&F.put_calls, __ATOMIC_SEQ_CST), puts_before);
}

/* ---- directories ---- */

static void add_file(obi_directory *dir, const char *name)
{
    obi_node node = {0};
    obi_digest d;
    obi_digest_of(name, strlen(name), &d);
    assert_ok(obi_node_init_file(&node, name, strlen(name), &d, strlen(name), false));
    assert_ok(obi_directory_add(dir, &node));
    obi_node_clear(&node);
}

static void add_dir(obi_directory *parent, const char *name, const obi_directory *child)
{
    obi_node node = {0};
    obi_digest d;
    assert_ok(obi_directory_digest(child, &d, err_ptr_));
    assert_ok(obi_node_init_directory(&node, name, strlen(name), &d, obi_directory_size(child)));
    assert_ok(obi_directory_add(parent, &node));
    obi_node_clear(&node);
}

typedef struct visited {
    obi_digest digests[8];
    size_t n;
} visited;

static int record_visit(const obi_directory *dir, const obi_digest *digest, void *ctx,
                        obi_error **err)
{
    (void)dir;
    (void)err;
    visited *v = ctx;
    assert_true(v->n < 8);
    v->digests[v->n++] = *digest;
    return 0;
}

static void test_rpc_directory_tree_roundtrips_breadth_first(void **state)
{
    (void)state;
    /* root -> {a -> {c}, b}: breadth-first is root, a, b, c (depth-first would be root, a, c, b) */
    cleanup_directory obi_directory *c = obi_directory_new();
    add_file(c, "in-c");
    cleanup_directory obi_directory *a = obi_directory_new();
    add_dir(a, "c", c);
    cleanup_directory obi_directory *b = obi_directory_new();
    add_file(b, "in-b");
    cleanup_directory obi_directory *root = obi_directory_new();
    add_dir(root, "a", a);
    add_dir(root, "b", b);

    obi_directory_putter *putter = NULL;
    assert_ok(obi_directory_open_put(F.directories, &putter, err_ptr_));
    assert_ok(obi_directory_put(putter, c, NULL, err_ptr_));
    assert_ok(obi_directory_put(putter, b, NULL, err_ptr_));
    assert_ok(obi_directory_put(putter, a, NULL, err_ptr_));
    obi_digest root_digest, want;
    assert_ok(obi_directory_put(putter, root, &want, err_ptr_));
    assert_ok(obi_directory_putter_finish(putter, &root_digest, err_ptr_));
    obi_directory_putter_close(putter);
    assert_memory_equal(root_digest.bytes, want.bytes, OBI_DIGEST_LEN);

    visited v = {0};
    assert_ok(obi_directory_get_recursive(F.directories, &root_digest, record_visit, &v, err_ptr_));
    assert_int_equal(v.n, 4);
    const obi_directory *order[] = {root, a, b, c};
    for (size_t i = 0; i < 4; i++) {
        obi_digest d;
        assert_ok(obi_directory_digest(order[i], &d, err_ptr_));
        assert_memory_equal(v.digests[i].bytes, d.bytes, OBI_DIGEST_LEN);
    }
    cleanup_directory obi_directory *got = NULL;
    obi_digest a_digest;
    assert_ok(obi_directory_digest(a, &a_digest, err_ptr_));
    assert_ok(obi_directory_get(F.directories, &a_digest, &got, err_ptr_));
    assert_int_equal(got->n_directories, 1);
}

static void test_rpc_directory_put_with_missing_child_fails_and_commits_nothing(void **state)
{
    (void)state;
    cleanup_directory obi_directory *leaf = obi_directory_new();
    add_file(leaf, "only-in-failed-put");
    cleanup_directory obi_directory *missing = obi_directory_new();
    add_file(missing, "never-sent");
    cleanup_directory obi_directory *root = obi_directory_new();
    add_dir(root, "leaf", leaf);
    add_dir(root, "missing", missing);

    obi_directory_putter *putter = NULL;
    obi_error *err = NULL;
    assert_ok(obi_directory_open_put(F.directories, &putter, err_ptr_));
    assert_ok(obi_directory_put(putter, leaf, NULL, err_ptr_));
    assert_ok(obi_directory_put(putter, root, NULL, err_ptr_));
    assert_fails_with(err, obi_directory_putter_finish(putter, NULL, &err), -EINVAL,
                      "directories[1]");
    obi_directory_putter_close(putter);
    obi_digest leaf_digest;
    assert_ok(obi_directory_digest(leaf, &leaf_digest, err_ptr_));
    obi_directory *got = NULL;
    assert_fails_with(err, obi_directory_get(F.directories, &leaf_digest, &got, &err), -ENOENT,
                      "not found");
}

static void test_rpc_directory_get_unknown_is_enoent(void **state)
{
    (void)state;
    obi_digest d;
    memset(d.bytes, 0x17, sizeof d.bytes);
    obi_error *err = NULL;
    obi_directory *got = NULL;
    assert_fails_with(err, obi_directory_get(F.directories, &d, &got, &err), -ENOENT, "not found");
    visited v = {0};
    assert_fails_with(err, obi_directory_get_recursive(F.directories, &d, record_visit, &v, &err),
                      -ENOENT, "not found");
    assert_int_equal(v.n, 0);
}

/* ---- builds ---- */

static obi_build_request *request_for(const char *what)
{
    char text[256];
    snprintf(text, sizeof text,
             "{\"command_args\": [\"%s\"], \"scratch_paths\": [\"out\"], \"outputs\": [\"out\"],"
             " \"inputs_dir\": \"nix/store\"}",
             what);
    json_t *json = json_loads(text, 0, NULL);
    assert_non_null(json);
    obi_build_request *req = NULL;
    assert_ok(obi_build_request_from_json(json, &req, err_ptr_));
    json_decref(json);
    return req;
}

static void test_rpc_build_succeeds_and_returns_the_build(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = request_for("ok");
    cleanup_build obi_build *build = NULL;
    assert_ok(obi_build_service_do_build(F.builds, req, &build, err_ptr_));
    assert_int_equal(build->n_outputs, 1);
    assert_string_equal((const char *)build->outputs[0].name.data, "out");
    assert_string_equal(build->request->command_args[0], "ok");
}

static void test_rpc_failed_build_is_ebuild_failed_with_head_and_tail(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = request_for("fail");
    obi_build *build = NULL;
    obi_error *err = NULL;
    int r = obi_build_service_do_build(F.builds, req, &build, &err);
    assert_int_equal(r, OBI_EBUILD_FAILED);
    assert_non_null(strstr(err->message, "exit code 3"));
    assert_non_null(strstr(err->message, "LOG-END"));
    assert_true(strlen(err->message) <= OBI_RPC_MAX_STATUS_MESSAGE);
    obi_error_free(err);
}

static void test_rpc_timed_out_build_is_etimedout(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = request_for("timeout");
    obi_build *build = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_service_do_build(F.builds, req, &build, &err), -ETIMEDOUT,
                      "timed out");
}

static void test_rpc_invalid_build_request_is_einval(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = request_for("ok");
    free(req->outputs[0]);
    req->outputs[0] = strdup("../escape");
    obi_build *build = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_service_do_build(F.builds, req, &build, &err), -EINVAL,
                      "outputs[0]");
}

/* ---- pure helpers ---- */

static void test_rpc_status_mapping_roundtrips(void **state)
{
    (void)state;
    static const int codes[] = {-EINVAL,    -ENOENT,  OBI_EBUILD_FAILED,
                                -ETIMEDOUT, -ENOTSUP, -ECANCELED};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        assert_int_equal(obi_rpc_errno_from_status(obi_rpc_status_from_errno(codes[i])), codes[i]);
    assert_int_equal(obi_rpc_status_from_errno(OBI_EBUILD_FAILED), GRPC_STATUS_ABORTED);
    assert_int_equal(obi_rpc_status_from_errno(-EXDEV), GRPC_STATUS_INTERNAL);
    assert_int_equal(obi_rpc_status_from_errno(0), GRPC_STATUS_OK);
}

static void test_rpc_status_message_clip_keeps_head_and_tail(void **state)
{
    (void)state;
    char *long_message = malloc(10001);
    memset(long_message, 'm', 10000);
    memcpy(long_message, "HEAD", 4);
    memcpy(long_message + 9996, "TAIL", 4);
    long_message[10000] = '\0';
    char *clipped = obi_rpc_status_message_clip(long_message);
    assert_int_equal(strlen(clipped), OBI_RPC_MAX_STATUS_MESSAGE);
    assert_memory_equal(clipped, "HEAD", 4);
    assert_string_equal(clipped + strlen(clipped) - 4, "TAIL");
    assert_non_null(strstr(clipped, "[...]"));
    free(clipped);
    clipped = obi_rpc_status_message_clip("short");
    assert_string_equal(clipped, "short");
    free(clipped);
    free(long_message);
}

static void test_rpc_grpc_http_url_with_a_path_is_refused(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_blob_service *svc = NULL;
    assert_fails_with(err, obi_blob_service_open("grpc+http://localhost:9/extra", &svc, &err),
                      -EINVAL, "/extra");
    assert_fails_with(err, obi_blob_service_open("grpc+http://localhost", &svc, &err), -EINVAL,
                      "HOST:PORT");
    assert_fails_with(err, obi_blob_service_open("grpc+unix://", &svc, &err), -EINVAL,
                      "socket path");
    assert_null(svc);
}

static void test_rpc_blob_chunk_parser_finds_data_and_refuses_truncation(void **state)
{
    (void)state;
    /* field 3 varint 5, field 1 "abc", field 7 fixed32 */
    static const uint8_t msg[] = {0x18, 0x05, 0x0a, 0x03, 'a', 'b', 'c', 0x3d, 1, 2, 3, 4};
    const uint8_t *data;
    size_t len;
    assert_int_equal(obi_rpc_blob_chunk_data(msg, sizeof msg, &data, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(data, "abc", 3);
    assert_int_equal(obi_rpc_blob_chunk_data(msg, 0, &data, &len), 0);
    assert_int_equal(len, 0);
    static const uint8_t truncated[] = {0x0a, 0x05, 'a', 'b'};
    assert_int_equal(obi_rpc_blob_chunk_data(truncated, sizeof truncated, &data, &len), -EBADMSG);
    static const uint8_t bad_wire_type[] = {0x0b, 0x00};
    assert_int_equal(obi_rpc_blob_chunk_data(bad_wire_type, sizeof bad_wire_type, &data, &len),
                     -EBADMSG);
}

static void test_rpc_unreachable_server_is_econnrefused_naming_it(void **state)
{
    (void)state;
    char url[600];
    snprintf(url, sizeof url, "grpc+unix://%s/nobody-listens.sock", F.dir);
    obi_blob_service *svc = NULL;
    assert_ok(obi_blob_service_open(url, &svc, err_ptr_)); /* channels connect lazily */
    obi_digest d;
    memset(d.bytes, 1, sizeof d.bytes);
    obi_error *err = NULL;
    assert_fails_with(err, obi_blob_has(svc, &d, &err), -ECONNREFUSED, "nobody-listens.sock");
    obi_blob_service_free(svc);
}

/* A directory service whose recursive Get lies: after the real root it sends a directory that
 * is not part of the tree (mode 1) or stops before the children (mode 2). */
typedef struct lying_directories {
    obi_directory_service base;
    obi_directory_service *real;
    int mode;
} lying_directories;

static int lying_get(obi_directory_service *base, const obi_digest *d, obi_directory **out,
                     obi_error **err)
{
    return obi_directory_get(((lying_directories *)base)->real, d, out, err);
}

static int lying_get_recursive(obi_directory_service *base, const obi_digest *root,
                               obi_directory_visit_fn visit, void *ctx, obi_error **err)
{
    lying_directories *svc = (lying_directories *)base;
    cleanup_directory obi_directory *dir = NULL;
    int r = obi_directory_get(svc->real, root, &dir, err);
    if (r >= 0)
        r = visit(dir, root, ctx, err);
    if (r < 0 || svc->mode == 2)
        return r;
    cleanup_directory obi_directory *stranger = obi_directory_new();
    add_file(stranger, "stranger");
    obi_digest d;
    assert_ok(obi_directory_digest(stranger, &d, err_ptr_));
    return visit(stranger, &d, ctx, err);
}

static void lying_free(obi_directory_service *base)
{
    free(base);
}

static const struct obi_directory_service_ops LYING_OPS = {
    .get = lying_get, .get_recursive = lying_get_recursive, .free = lying_free};

static void test_rpc_recursive_get_refuses_directories_outside_the_tree(void **state)
{
    (void)state;
    cleanup_directory obi_directory *leaf = obi_directory_new();
    add_file(leaf, "leaf-file");
    cleanup_directory obi_directory *root = obi_directory_new();
    add_dir(root, "leaf", leaf);
    obi_directory_putter *putter = NULL;
    obi_digest root_digest;
    assert_ok(obi_directory_open_put(F.server_directories, &putter, err_ptr_));
    assert_ok(obi_directory_put(putter, leaf, NULL, err_ptr_));
    assert_ok(obi_directory_put(putter, root, NULL, err_ptr_));
    assert_ok(obi_directory_putter_finish(putter, &root_digest, err_ptr_));
    obi_directory_putter_close(putter);

    for (int mode = 1; mode <= 2; mode++) {
        lying_directories *lying = calloc(1, sizeof *lying);
        lying->base.ops = &LYING_OPS;
        lying->real = F.server_directories;
        lying->mode = mode;
        char address[600], url[600];
        snprintf(address, sizeof address, "unix:%s/lying%d.sock", F.dir, mode);
        snprintf(url, sizeof url, "grpc+unix://%s/lying%d.sock", F.dir, mode);
        obi_rpc_server_options options = {.directories = &lying->base, .castore_workers = 1};
        obi_rpc_server *server = NULL;
        assert_ok(obi_rpc_server_new(&options, &server, err_ptr_));
        assert_ok(obi_rpc_server_listen(server, address, NULL, err_ptr_));
        assert_ok(obi_rpc_server_start(server, err_ptr_));
        obi_directory_service *client = NULL;
        assert_ok(obi_directory_service_open(url, &client, err_ptr_));
        visited v = {0};
        obi_error *err = NULL;
        assert_fails_with(err,
                          obi_directory_get_recursive(client, &root_digest, record_visit, &v, &err),
                          -EBADMSG, mode == 1 ? "not part of the tree" : "left out 1");
        obi_directory_service_free(client);
        assert_ok(obi_rpc_server_shutdown(server, 1000, err_ptr_));
        obi_rpc_server_free(server);
        obi_directory_service_free(&lying->base);
    }
}

static void test_rpc_log_level_parses_names_only(void **state)
{
    (void)state;
    obi_log_level level;
    assert_ok(obi_log_level_parse("debug", &level, err_ptr_));
    assert_int_equal(level, OBI_LOG_DEBUG);
    obi_error *err = NULL;
    assert_fails_with(err, obi_log_level_parse("loud", &level, &err), -EINVAL, "loud");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rpc_blob_roundtrips_in_several_chunks),
        cmocka_unit_test(test_rpc_blob_missing_is_absent_and_enoent),
        cmocka_unit_test(test_rpc_blob_unfinished_writer_stores_nothing),
        cmocka_unit_test(test_rpc_blob_already_stored_is_not_uploaded_again),
        cmocka_unit_test(test_rpc_directory_tree_roundtrips_breadth_first),
        cmocka_unit_test(test_rpc_directory_put_with_missing_child_fails_and_commits_nothing),
        cmocka_unit_test(test_rpc_directory_get_unknown_is_enoent),
        cmocka_unit_test(test_rpc_build_succeeds_and_returns_the_build),
        cmocka_unit_test(test_rpc_failed_build_is_ebuild_failed_with_head_and_tail),
        cmocka_unit_test(test_rpc_timed_out_build_is_etimedout),
        cmocka_unit_test(test_rpc_invalid_build_request_is_einval),
        cmocka_unit_test(test_rpc_status_mapping_roundtrips),
        cmocka_unit_test(test_rpc_status_message_clip_keeps_head_and_tail),
        cmocka_unit_test(test_rpc_grpc_http_url_with_a_path_is_refused),
        cmocka_unit_test(test_rpc_blob_chunk_parser_finds_data_and_refuses_truncation),
        cmocka_unit_test(test_rpc_unreachable_server_is_econnrefused_naming_it),
        cmocka_unit_test(test_rpc_recursive_get_refuses_directories_outside_the_tree),
        cmocka_unit_test(test_rpc_log_level_parses_names_only),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
