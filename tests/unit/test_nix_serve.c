/*
 * Unit tests for the serve protocol's server loop (nix_serve.h): whole sessions written as bytes
 * into a memfd (the client's side, as Nix 2.8's legacy-ssh-store.cc sends it), served against a
 * memory castore, a directory of path infos and the dummy builder, the reply decoded from
 * another memfd. The happy path (AddToStoreNar, then validity, path info and NAR back) and the
 * refusals that keep a half-trusted client from recording what it did not send: a NAR other
 * than the one announced, one longer than its narSize, a write without --write.
 */
#include "test_helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/hex.h"
#include "ocibuild/nar.h"
#include "ocibuild/nix_serve.h"
#include "ocibuild/serve_protocol.h"

#define PATH_A "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello"
#define PATH_B "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-dep"

/* ---- the client's bytes (written independently of the code under test) ---- */

static void put_u64(obi_buf *b, uint64_t v)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    assert_int_equal(obi_buf_append(b, le, 8), 0);
}

static void put_str(obi_buf *b, const char *s)
{
    static const uint8_t zeros[8];
    size_t len = strlen(s);
    put_u64(b, len);
    assert_int_equal(obi_buf_append(b, s, len), 0);
    assert_int_equal(obi_buf_append(b, zeros, (8 - len % 8) % 8), 0);
}

static int buf_sink(void *ctx, const void *data, size_t len, obi_error **err)
{
    (void)err;
    return obi_buf_append(ctx, data, len);
}

/* The NAR of a regular file holding text, and its hash. */
static void nar_of_text(const char *text, obi_buf *nar, obi_nar_hash *hash)
{
    char *dir = obi_test_tmpdir();
    cleanup_free char *file = obi_path_join(dir, "f");
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_ok(obi_nar_write_path(file, buf_sink, nar, err_ptr_));
    assert_ok(obi_nar_hash_path(file, hash, err_ptr_));
    obi_test_tmpdir_remove(dir);
}

static void put_hello(obi_buf *b)
{
    put_u64(b, OBI_SERVE_MAGIC_1);
    put_u64(b, (2u << 8) | 7u);
}

/* AddToStoreNar as legacy-ssh-store.cc sends it: the hash in base16 without "sha256:". */
static void put_add_to_store_nar(obi_buf *b, const char *path, const obi_nar_hash *hash,
                                 uint64_t nar_size, const obi_buf *nar)
{
    char hex[2 * OBI_SHA256_LEN + 1];
    obi_hex_encode(hash->sha256, OBI_SHA256_LEN, hex);
    put_u64(b, OBI_SERVE_ADD_TO_STORE_NAR);
    put_str(b, path);
    put_str(b, "");
    put_str(b, hex);
    put_u64(b, 1); /* references: the path itself */
    put_str(b, path);
    put_u64(b, 0); /* registration time */
    put_u64(b, nar_size);
    put_u64(b, 0); /* ultimate */
    put_u64(b, 0); /* sigs */
    put_str(b, "");
    assert_int_equal(obi_buf_append(b, nar->data, nar->len), 0);
}

/* ---- a server ---- */

typedef struct server {
    char *dir;
    obi_store *store;
    obi_build_service *builder;
    obi_nix_path_info_store *path_infos;
    obi_nix_serve_options opts;
    obi_buf reply;
} server;

static void server_open(server *s, bool write_allowed)
{
    memset(s, 0, sizeof *s);
    s->dir = obi_test_tmpdir();
    assert_ok(obi_store_open("memory://", "memory://", &s->store, err_ptr_));
    assert_ok(obi_build_service_open("dummy://", s->store, &s->builder, err_ptr_));
    assert_ok(obi_nix_path_info_store_open(s->dir, &s->path_infos, err_ptr_));
    s->opts = (obi_nix_serve_options){s->store, s->builder, s->path_infos, 1, write_allowed};
    s->reply = (obi_buf)OBI_BUF_INIT;
}

static void server_close(server *s)
{
    obi_nix_path_info_store_close(s->path_infos);
    obi_build_service_free(s->builder);
    obi_store_close(s->store);
    obi_test_tmpdir_remove(s->dir);
    obi_buf_free(&s->reply);
}

/* Serves the session in request; the reply lands in s->reply. */
static int serve(server *s, const obi_buf *request, obi_error **err)
{
    int in = memfd_create("request", MFD_CLOEXEC), out = memfd_create("reply", MFD_CLOEXEC);
    assert_true(in >= 0 && out >= 0);
    assert_int_equal(write(in, request->data, request->len), (ssize_t)request->len);
    assert_int_equal(lseek(in, 0, SEEK_SET), 0);
    int r = obi_nix_serve(in, out, &s->opts, err);
    off_t len = lseek(out, 0, SEEK_END);
    assert_true(len >= 0);
    assert_int_equal(obi_buf_reserve(&s->reply, (size_t)len), 0);
    assert_int_equal(pread(out, s->reply.data, (size_t)len, 0), len);
    s->reply.len = (size_t)len;
    close(in);
    close(out);
    return r;
}

static bool recorded(server *s, const char *path)
{
    obi_nix_path_info *info = NULL;
    obi_error *err = NULL;
    int r = obi_nix_path_info_get(s->path_infos, path, &info, &err);
    obi_nix_path_info_free(info);
    obi_error_free(err);
    return r == 0;
}

/* ---- tests ---- */

static void test_serve_add_to_store_nar_then_validity_info_and_nar_back(void **state)
{
    (void)state;
    cleanup_buf obi_buf nar = OBI_BUF_INIT, req = OBI_BUF_INIT;
    obi_nar_hash hash;
    nar_of_text("hello\n", &nar, &hash);
    put_hello(&req);
    put_add_to_store_nar(&req, PATH_A, &hash, hash.size, &nar);
    put_u64(&req, OBI_SERVE_QUERY_VALID_PATHS);
    put_u64(&req, 0);
    put_u64(&req, 0);
    put_u64(&req, 2);
    put_str(&req, PATH_A);
    put_str(&req, PATH_B);
    put_u64(&req, OBI_SERVE_QUERY_PATH_INFOS);
    put_u64(&req, 2);
    put_str(&req, PATH_A);
    put_str(&req, PATH_B);
    put_u64(&req, OBI_SERVE_DUMP_STORE_PATH);
    put_str(&req, PATH_A);

    server s;
    server_open(&s, true);
    assert_ok(serve(&s, &req, err_ptr_));
    assert_true(recorded(&s, PATH_A));

    cleanup_buf obi_buf want = OBI_BUF_INIT;
    put_u64(&want, OBI_SERVE_MAGIC_2);
    put_u64(&want, OBI_SERVE_VERSION);
    put_u64(&want, 1); /* AddToStoreNar: success */
    put_u64(&want, 1); /* QueryValidPaths: PATH_A only */
    put_str(&want, PATH_A);
    put_str(&want, PATH_A); /* QueryPathInfos: PATH_A only, then "" */
    put_str(&want, "");
    put_u64(&want, 1);
    put_str(&want, PATH_A);
    put_u64(&want, hash.size);
    put_u64(&want, hash.size);
    cleanup_free char *hash_text = obi_nar_hash_to_string(&hash);
    put_str(&want, hash_text);
    put_str(&want, "");
    put_u64(&want, 0);
    put_str(&want, "");
    assert_int_equal(obi_buf_append(&want, nar.data, nar.len), 0); /* DumpStorePath */
    assert_int_equal(s.reply.len, want.len);
    assert_memory_equal(s.reply.data, want.data, want.len);
    server_close(&s);
}

static void test_serve_refuses_a_nar_other_than_the_one_announced(void **state)
{
    (void)state;
    cleanup_buf obi_buf nar = OBI_BUF_INIT, other = OBI_BUF_INIT, req = OBI_BUF_INIT;
    obi_nar_hash hash, other_hash;
    nar_of_text("hello\n", &nar, &hash);
    nar_of_text("hellp\n", &other, &other_hash); /* same length, other bytes */
    put_hello(&req);
    put_add_to_store_nar(&req, PATH_A, &hash, hash.size, &other);
    server s;
    server_open(&s, true);
    obi_error *err = NULL;
    assert_fails_with(err, serve(&s, &req, &err), -EINVAL, "is not the one announced");
    assert_false(recorded(&s, PATH_A));
    server_close(&s);
}

static void test_serve_refuses_a_nar_longer_than_its_nar_size(void **state)
{
    (void)state;
    cleanup_buf obi_buf nar = OBI_BUF_INIT, req = OBI_BUF_INIT;
    obi_nar_hash hash;
    nar_of_text("hello\n", &nar, &hash);
    put_hello(&req);
    put_add_to_store_nar(&req, PATH_A, &hash, hash.size - 8, &nar);
    server s;
    server_open(&s, true);
    obi_error *err = NULL;
    assert_fails_with(err, serve(&s, &req, &err), -EINVAL, "past its narSize");
    assert_false(recorded(&s, PATH_A));
    server_close(&s);
}

static void test_serve_refuses_writes_without_write_access(void **state)
{
    (void)state;
    cleanup_buf obi_buf nar = OBI_BUF_INIT, req = OBI_BUF_INIT;
    obi_nar_hash hash;
    nar_of_text("hello\n", &nar, &hash);
    put_hello(&req);
    put_add_to_store_nar(&req, PATH_A, &hash, hash.size, &nar);
    server s;
    server_open(&s, false);
    obi_error *err = NULL;
    assert_fails_with(err, serve(&s, &req, &err), -EPERM, "AddToStoreNar needs write access");
    assert_false(recorded(&s, PATH_A));
    server_close(&s);
}

static void test_serve_refuses_unknown_commands_and_unknown_paths(void **state)
{
    (void)state;
    cleanup_buf obi_buf unknown = OBI_BUF_INIT, dump = OBI_BUF_INIT;
    put_hello(&unknown);
    put_u64(&unknown, 42);
    put_hello(&dump);
    put_u64(&dump, OBI_SERVE_DUMP_STORE_PATH);
    put_str(&dump, PATH_B);
    server s;
    server_open(&s, true);
    obi_error *err = NULL;
    assert_fails_with(err, serve(&s, &unknown, &err), -EINVAL, "unknown command 42");
    assert_fails_with(err, serve(&s, &dump, &err), -ENOENT,
                      "DumpStorePath: path '" PATH_B "' is not valid here");
    server_close(&s);
}

/* BuildDerivation with an input that was never sent: Nix's DependencyFailed, naming it. */
static void test_serve_build_with_an_input_not_sent_fails_naming_it(void **state)
{
    (void)state;
    cleanup_buf obi_buf req = OBI_BUF_INIT;
    put_hello(&req);
    put_u64(&req, OBI_SERVE_BUILD_DERIVATION);
    put_str(&req, "/nix/store/cccccccccccccccccccccccccccccccc-x.drv");
    put_u64(&req, 1); /* outputs: out */
    put_str(&req, "out");
    put_str(&req, "/nix/store/dddddddddddddddddddddddddddddddd-x");
    put_str(&req, "");
    put_str(&req, "");
    put_u64(&req, 1); /* input sources */
    put_str(&req, PATH_B);
    put_str(&req, "x86_64-linux");
    put_str(&req, PATH_B);
    put_u64(&req, 0); /* args */
    put_u64(&req, 1); /* env */
    put_str(&req, "out");
    put_str(&req, "/nix/store/dddddddddddddddddddddddddddddddd-x");
    for (int i = 0; i < 5; i++) /* maxSilentTime, buildTimeout, maxLogSize, repeat, determinism */
        put_u64(&req, 0);
    put_u64(&req, 0); /* keepFailed */
    server s;
    server_open(&s, true);
    assert_ok(serve(&s, &req, err_ptr_));
    cleanup_serve_reader obi_serve_reader *reply = NULL;
    assert_ok(obi_serve_reader_new_mem(s.reply.data, s.reply.len, &reply, err_ptr_));
    uint64_t v;
    for (int i = 0; i < 2; i++) /* the hello */
        assert_ok(obi_serve_read_u64(reply, "hello", &v, err_ptr_));
    assert_ok(obi_serve_read_u64(reply, "status", &v, err_ptr_));
    assert_int_equal(v, OBI_SERVE_DEPENDENCY_FAILED);
    cleanup_free char *msg = NULL;
    assert_ok(obi_serve_read_string(reply, "errorMsg", 4096, &msg, NULL, err_ptr_));
    assert_non_null(strstr(msg, "input " PATH_B " is not valid here"));
    server_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serve_add_to_store_nar_then_validity_info_and_nar_back),
        cmocka_unit_test(test_serve_refuses_a_nar_other_than_the_one_announced),
        cmocka_unit_test(test_serve_refuses_a_nar_longer_than_its_nar_size),
        cmocka_unit_test(test_serve_refuses_writes_without_write_access),
        cmocka_unit_test(test_serve_refuses_unknown_commands_and_unknown_paths),
        cmocka_unit_test(test_serve_build_with_an_input_not_sent_fails_naming_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
