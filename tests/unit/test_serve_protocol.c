/*
 * Unit tests for the serve protocol codec (serve_protocol.h): byte-level fixtures written out
 * by hand for the hello, strings, path infos and build results at the versions where their
 * layout changes; requests as Nix 2.8's client (legacy-ssh-store.cc) and Hydra send them; and
 * for every field a malformed input that must be refused naming its byte offset and field.
 */
#include "test_helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/serve_protocol.h"

#define H32A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define H32B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define H32C "cccccccccccccccccccccccccccccccc"
#define PATH_A "/nix/store/" H32A "-a"
#define PATH_B "/nix/store/" H32B "-b-1.0"
#define PATH_C "/nix/store/" H32C "-c"
#define DRV_PATH "/nix/store/" H32C "-c.drv"

/* ---- fixture builders (independent of the code under test) ---- */

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

static void put_strs(obi_buf *b, const char *const *list)
{
    size_t n = 0;
    while (list[n])
        n++;
    put_u64(b, n);
    for (size_t i = 0; i < n; i++)
        put_str(b, list[i]);
}

static obi_serve_reader *reader_of(const obi_buf *b)
{
    obi_serve_reader *r = NULL;
    assert_ok(obi_serve_reader_new_mem(b->data, b->len, &r, err_ptr_));
    return r;
}

/* ---- framing ---- */

static void test_string_is_length_bytes_and_zero_padding(void **state)
{
    (void)state;
    static const uint8_t bytes[] = {3, 0, 0, 0, 0, 0, 0, 0, 'a', 'b', 'c', 0, 0, 0, 0, 0};
    cleanup_serve_reader obi_serve_reader *r = NULL;
    assert_ok(obi_serve_reader_new_mem(bytes, sizeof bytes, &r, err_ptr_));
    cleanup_free char *s = NULL;
    size_t len = 0;
    assert_ok(obi_serve_read_string(r, "field", 100, &s, &len, err_ptr_));
    assert_string_equal(s, "abc");
    assert_int_equal(len, 3);
    assert_int_equal(obi_serve_reader_offset(r), 16);

    cleanup_buf obi_buf out = OBI_BUF_INIT;
    cleanup_serve_writer obi_serve_writer *w = NULL;
    assert_ok(obi_serve_writer_new_buf(&out, &w, err_ptr_));
    assert_ok(obi_serve_write_string(w, "abc", err_ptr_));
    assert_int_equal(out.len, sizeof bytes);
    assert_memory_equal(out.data, bytes, sizeof bytes);
    assert_int_equal(obi_serve_writer_offset(w), 16);
}

static void test_string_refusals_name_offset_and_field(void **state)
{
    (void)state;
    obi_error *err = NULL;
    char *s = NULL;
    /* non-zero padding at offset 12 */
    static const uint8_t bad_pad[] = {3, 0, 0, 0, 0, 0, 0, 0, 'a', 'b', 'c', 0, 7, 0, 0, 0};
    cleanup_serve_reader obi_serve_reader *r1 = NULL;
    assert_ok(obi_serve_reader_new_mem(bad_pad, sizeof bad_pad, &r1, err_ptr_));
    assert_fails_with(err, obi_serve_read_string(r1, "X.name", 100, &s, NULL, &err), -EINVAL,
                      "serve: offset 12: X.name: non-zero padding");
    /* NUL inside at offset 9 */
    static const uint8_t nul[] = {3, 0, 0, 0, 0, 0, 0, 0, 'a', 0, 'c', 0, 0, 0, 0, 0};
    cleanup_serve_reader obi_serve_reader *r2 = NULL;
    assert_ok(obi_serve_reader_new_mem(nul, sizeof nul, &r2, err_ptr_));
    assert_fails_with(err, obi_serve_read_string(r2, "X.name", 100, &s, NULL, &err), -EINVAL,
                      "serve: offset 9: X.name: a NUL byte");
    /* longer than allowed */
    static const uint8_t long_str[] = {200, 0, 0, 0, 0, 0, 0, 0};
    cleanup_serve_reader obi_serve_reader *r3 = NULL;
    assert_ok(obi_serve_reader_new_mem(long_str, sizeof long_str, &r3, err_ptr_));
    assert_fails_with(err, obi_serve_read_string(r3, "X.name", 100, &s, NULL, &err), -EINVAL,
                      "serve: offset 0: X.name: a string of 200 bytes (at most 100");
    /* huge length: refused before anything is allocated */
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    cleanup_serve_reader obi_serve_reader *r4 = NULL;
    assert_ok(obi_serve_reader_new_mem(huge, sizeof huge, &r4, err_ptr_));
    assert_fails_with(err, obi_serve_read_string(r4, "X.v", OBI_SERVE_MAX_STRING, &s, NULL, &err),
                      -EINVAL, "serve: offset 0: X.v: a string of 18446744073709551615 bytes");
    /* the stream ends inside */
    static const uint8_t cut[] = {5, 0, 0, 0, 0, 0, 0, 0, 'a', 'b'};
    cleanup_serve_reader obi_serve_reader *r5 = NULL;
    assert_ok(obi_serve_reader_new_mem(cut, sizeof cut, &r5, err_ptr_));
    assert_fails_with(err, obi_serve_read_string(r5, "X.name", 100, &s, NULL, &err), -EPIPE,
                      "ends at offset 10, in the middle of X.name");
    assert_null(s);
}

static void test_bool_is_zero_or_one(void **state)
{
    (void)state;
    static const uint8_t bytes[] = {1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0};
    cleanup_serve_reader obi_serve_reader *r = NULL;
    assert_ok(obi_serve_reader_new_mem(bytes, sizeof bytes, &r, err_ptr_));
    bool b = false;
    assert_ok(obi_serve_read_bool(r, "lock", &b, err_ptr_));
    assert_true(b);
    obi_error *err = NULL;
    assert_fails_with(err, obi_serve_read_bool(r, "substitute", &b, &err), -EINVAL,
                      "serve: offset 8: substitute: expected 0 or 1, got 2");
}

static void test_command_end_of_stream_is_clean_only_between_commands(void **state)
{
    (void)state;
    uint64_t cmd = 0;
    cleanup_serve_reader obi_serve_reader *empty = NULL;
    assert_ok(obi_serve_reader_new_mem("", 0, &empty, err_ptr_));
    assert_int_equal(obi_serve_read_command(empty, &cmd, NULL), 0);
    static const uint8_t partial[] = {1, 0, 0};
    cleanup_serve_reader obi_serve_reader *r = NULL;
    assert_ok(obi_serve_reader_new_mem(partial, sizeof partial, &r, err_ptr_));
    obi_error *err = NULL;
    assert_fails_with(err, obi_serve_read_command(r, &cmd, &err), -EPIPE,
                      "in the middle of the command");
}

static void test_command_reads_from_a_pipe(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    static const uint8_t cmd_bytes[] = {9, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(write(fds[1], cmd_bytes, sizeof cmd_bytes), 8);
    close(fds[1]);
    cleanup_serve_reader obi_serve_reader *r = NULL;
    assert_ok(obi_serve_reader_new_fd(fds[0], &r, err_ptr_));
    uint64_t cmd = 0;
    assert_int_equal(obi_serve_read_command(r, &cmd, NULL), 1);
    assert_int_equal(cmd, OBI_SERVE_ADD_TO_STORE_NAR);
    assert_int_equal(obi_serve_read_command(r, &cmd, NULL), 0);
    close(fds[0]);
}

/* ---- the hello ---- */

static void test_handshake_bytes(void **state)
{
    (void)state;
    static const uint8_t client[] = {0xeb, 0x9d, 0x0c, 0x39, 0, 0, 0, 0,  /* SERVE_MAGIC_1 */
                                     0x06, 0x02, 0,    0,    0, 0, 0, 0}; /* 2.6 */
    static const uint8_t server[] = {0xcb, 0xee, 0x52, 0x54, 0, 0, 0, 0,  /* SERVE_MAGIC_2 */
                                     0x07, 0x02, 0,    0,    0, 0, 0, 0}; /* 2.7 */
    cleanup_serve_reader obi_serve_reader *r = NULL;
    assert_ok(obi_serve_reader_new_mem(client, sizeof client, &r, err_ptr_));
    cleanup_buf obi_buf out = OBI_BUF_INIT;
    cleanup_serve_writer obi_serve_writer *w = NULL;
    assert_ok(obi_serve_writer_new_buf(&out, &w, err_ptr_));
    unsigned version = 0;
    assert_ok(obi_serve_handshake(r, w, &version, err_ptr_));
    assert_int_equal(version, 0x206);
    assert_int_equal(out.len, sizeof server);
    assert_memory_equal(out.data, server, sizeof server);
}

static void handshake_fails(uint64_t magic, uint64_t version, const char *needle)
{
    cleanup_buf obi_buf in = OBI_BUF_INIT, out = OBI_BUF_INIT;
    put_u64(&in, magic);
    put_u64(&in, version);
    cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
    cleanup_serve_writer obi_serve_writer *w = NULL;
    assert_ok(obi_serve_writer_new_buf(&out, &w, err_ptr_));
    unsigned v = 0;
    obi_error *err = NULL;
    assert_fails_with(err, obi_serve_handshake(r, w, &v, &err), -EPROTO, needle);
}

static void test_handshake_refuses_other_magic_and_versions(void **state)
{
    (void)state;
    handshake_fails(0x12345678, 0x207, "offset 0: the client's magic number: expected 0x390c9deb");
    handshake_fails(OBI_SERVE_MAGIC_1, 0x107,
                    "offset 8: the client's version: 0x107 is not "
                    "served (versions 2.4 to 2.7 are)");
    handshake_fails(OBI_SERVE_MAGIC_1, 0x203, "0x203 is not served");
    handshake_fails(OBI_SERVE_MAGIC_1, 0x10207, "0x10207 is not served");
}

static void test_handshake_serves_newer_minor_as_2_7(void **state)
{
    (void)state;
    cleanup_buf obi_buf in = OBI_BUF_INIT, out = OBI_BUF_INIT;
    put_u64(&in, OBI_SERVE_MAGIC_1);
    put_u64(&in, 0x209);
    cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
    cleanup_serve_writer obi_serve_writer *w = NULL;
    assert_ok(obi_serve_writer_new_buf(&out, &w, err_ptr_));
    unsigned v = 0;
    assert_ok(obi_serve_handshake(r, w, &v, err_ptr_));
    assert_int_equal(v, 0x207);
}

/* ---- store paths ---- */

static void test_store_path_set_is_sorted_and_unique(void **state)
{
    (void)state;
    cleanup_buf obi_buf in = OBI_BUF_INIT;
    put_strs(&in, (const char *const[]){PATH_C, PATH_A, PATH_C, PATH_B, NULL});
    cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    assert_ok(obi_serve_read_store_paths(r, "paths", &paths, &n, err_ptr_));
    assert_int_equal(n, 3);
    assert_string_equal(paths[0], PATH_A);
    assert_string_equal(paths[1], PATH_B);
    assert_string_equal(paths[2], PATH_C);
    assert_null(paths[3]);
}

static void test_store_path_set_names_the_bad_element(void **state)
{
    (void)state;
    cleanup_buf obi_buf in = OBI_BUF_INIT;
    put_strs(&in, (const char *const[]){PATH_A, "/etc/passwd", NULL});
    cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
    char **paths = NULL;
    size_t n = 0;
    obi_error *err = NULL;
    /* count 8 bytes, PATH_A 8 + 48 bytes: the second element starts at 64 */
    assert_fails_with(err, obi_serve_read_store_paths(r, "QueryValidPaths.paths", &paths, &n, &err),
                      -EINVAL,
                      "serve: offset 64: QueryValidPaths.paths[1]: '/etc/passwd' is not in "
                      "/nix/store");
    assert_null(paths);
}

static void test_list_count_is_bounded(void **state)
{
    (void)state;
    cleanup_buf obi_buf in = OBI_BUF_INIT;
    put_u64(&in, 1ull << 40);
    cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
    char **strv = NULL;
    size_t n = 0;
    obi_error *err = NULL;
    assert_fails_with(err, obi_serve_read_strings(r, "BuildDerivation.args", 10, &strv, &n, &err),
                      -E2BIG, "serve: offset 0: BuildDerivation.args: a list of 1099511627776");
}

static void test_request_budget_bounds_the_strings_of_one_request(void **state)
{
    (void)state;
    cleanup_buf obi_buf in = OBI_BUF_INIT;
    put_str(&in, "abcdef");
    put_str(&in, "ghijk");
    put_str(&in, "ghijk");
    cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
    obi_serve_reader_set_budget(r, 10);
    cleanup_free char *first = NULL;
    assert_ok(obi_serve_read_string(r, "env[0]", 100, &first, NULL, err_ptr_));
    obi_error *err = NULL;
    char *s = NULL;
    assert_fails_with(err, obi_serve_read_string(r, "env[1]", 100, &s, NULL, &err), -E2BIG,
                      "serve: offset 16: env[1]: the request's strings exceed its budget (4 more "
                      "bytes allowed, this one has 5)");
    /* the next request starts with a fresh budget */
    cleanup_serve_reader obi_serve_reader *r2 = reader_of(&in);
    obi_serve_reader_set_budget(r2, 11);
    cleanup_free char *a = NULL, *b = NULL;
    assert_ok(obi_serve_read_string(r2, "a", 100, &a, NULL, err_ptr_));
    assert_ok(obi_serve_read_string(r2, "b", 100, &b, NULL, err_ptr_));
}

/* ---- hashes ---- */

static void test_sha256_in_every_spelling_nix_accepts(void **state)
{
    (void)state;
    /* sha256("hello") */
    static const char hex[] = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    static const char b32[] = "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic";
    static const char b64[] = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";
    uint8_t want[32], got[32];
    assert_int_equal(obi_hex_decode(hex, 64, want, 32), 0);
    const char *spellings[] = {hex,
                               b32,
                               b64,
                               "sha256:"
                               "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa"
                               "7425e73043362938b9824",
                               "sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic",
                               "sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(spellings); i++) {
        memset(got, 0, sizeof got);
        assert_ok(obi_serve_parse_sha256(spellings[i], got, err_ptr_));
        assert_memory_equal(got, want, 32);
    }
    cleanup_free char *printed = obi_serve_nar_hash_string(want);
    assert_string_equal(printed, "sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic");
    obi_error *err = NULL;
    assert_fails_with(err, obi_serve_parse_sha256("md5:abc", got, &err), -EINVAL,
                      "not a sha256 hash");
    assert_fails_with(err, obi_serve_parse_sha256("2cf24dba", got, &err), -EINVAL,
                      "64 hex, 52 base-32 or 44 base-64");
    assert_fails_with(err,
                      obi_serve_parse_sha256("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e7304"
                                             "3362938b982g",
                                             got, &err),
                      -EINVAL, "invalid base-16");
}

/* ---- path infos ---- */

/* AddToStoreNar as Nix 2.8's LegacySSHStore::addToStore writes it (after the command). */
static void put_add_to_store_nar(obi_buf *b, const char *hash, uint64_t nar_size, const char *ca)
{
    put_str(b, PATH_B);
    put_str(b, DRV_PATH); /* deriver */
    put_str(b, hash);
    put_strs(b, (const char *const[]){PATH_B, PATH_A, NULL});
    put_u64(b, 1700000000); /* registrationTime */
    put_u64(b, nar_size);
    put_u64(b, 0); /* ultimate */
    put_strs(b, (const char *const[]){"cache.example-1:c2ln", NULL});
    put_str(b, ca);
}

static void test_add_to_store_nar_header(void **state)
{
    (void)state;
    cleanup_buf obi_buf in = OBI_BUF_INIT;
    put_add_to_store_nar(&in, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
                         112,
                         "fixed:r:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic");
    cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
    cleanup_serve_path_info obi_serve_path_info *info = NULL;
    assert_ok(obi_serve_read_add_to_store_nar(r, &info, err_ptr_));
    assert_string_equal(info->path, PATH_B);
    assert_string_equal(info->deriver, DRV_PATH);
    assert_int_equal(info->n_references, 2);
    assert_string_equal(info->references[0], PATH_A); /* sorted */
    assert_string_equal(info->references[1], PATH_B);
    assert_int_equal(info->nar_size, 112);
    assert_int_equal(info->registration_time, 1700000000);
    assert_false(info->ultimate);
    assert_int_equal(info->n_sigs, 1);
    assert_string_equal(info->ca,
                        "fixed:r:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic");
    assert_int_equal(info->nar_hash[0], 0x2c);
    assert_int_equal(obi_serve_reader_offset(r), in.len);
}

static void test_add_to_store_nar_refusals(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_serve_path_info *info = NULL;
    {
        cleanup_buf obi_buf in = OBI_BUF_INIT;
        put_add_to_store_nar(&in, "nothex", 112, "");
        cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
        /* path 8+56, deriver 8+56: the hash starts at 128 */
        assert_fails_with(err, obi_serve_read_add_to_store_nar(r, &info, &err), -EINVAL,
                          "serve: offset 128: AddToStoreNar.narHash: 'nothex' is not a sha256");
    }
    {
        cleanup_buf obi_buf in = OBI_BUF_INIT;
        put_add_to_store_nar(
            &in, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", 0, "");
        cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
        assert_fails_with(err, obi_serve_read_add_to_store_nar(r, &info, &err), -EINVAL,
                          "AddToStoreNar.narSize: 0");
    }
    {
        cleanup_buf obi_buf in = OBI_BUF_INIT;
        put_add_to_store_nar(&in,
                             "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", 8,
                             "fixed:rot13:abc");
        cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
        assert_fails_with(err, obi_serve_read_add_to_store_nar(r, &info, &err), -EINVAL,
                          "AddToStoreNar.ca: 'fixed:rot13:abc' is not a content address");
    }
    {
        cleanup_buf obi_buf in = OBI_BUF_INIT;
        put_str(&in, PATH_B);
        put_str(&in, "not-a-path");
        cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
        assert_fails_with(
            err, obi_serve_read_add_to_store_nar(r, &info, &err), -EINVAL,
            "serve: offset 64: AddToStoreNar.deriver: 'not-a-path' is not in /nix/store");
    }
    assert_null(info);
}

static void test_export_trailer_round_trip_and_refusals(void **state)
{
    (void)state;
    cleanup_serve_path_info obi_serve_path_info *info = obi_serve_path_info_new();
    assert_non_null(info);
    info->path = strdup(PATH_B);
    obi_strv_free(info->references);
    info->references = calloc(2, sizeof *info->references);
    info->references[0] = strdup(PATH_A);
    info->n_references = 1;
    cleanup_buf obi_buf out = OBI_BUF_INIT;
    cleanup_serve_writer obi_serve_writer *w = NULL;
    assert_ok(obi_serve_writer_new_buf(&out, &w, err_ptr_));
    assert_ok(obi_serve_write_export_trailer(w, info, err_ptr_));

    cleanup_buf obi_buf want = OBI_BUF_INIT;
    put_u64(&want, 0x4558494e);
    put_str(&want, PATH_B);
    put_strs(&want, (const char *const[]){PATH_A, NULL});
    put_str(&want, "");
    put_u64(&want, 0);
    assert_int_equal(out.len, want.len);
    assert_memory_equal(out.data, want.data, want.len);

    cleanup_serve_reader obi_serve_reader *r = reader_of(&out);
    cleanup_serve_path_info obi_serve_path_info *back = NULL;
    assert_ok(obi_serve_read_export_trailer(r, &back, err_ptr_));
    assert_string_equal(back->path, PATH_B);
    assert_int_equal(back->n_references, 1);
    assert_string_equal(back->deriver, "");

    /* a legacy signature is read and dropped */
    cleanup_buf obi_buf signed_in = OBI_BUF_INIT;
    assert_int_equal(obi_buf_append(&signed_in, want.data, want.len - 8), 0);
    put_u64(&signed_in, 1);
    put_str(&signed_in, "sig");
    put_u64(&signed_in, 42); /* the next thing in the stream stays unread */
    cleanup_serve_reader obi_serve_reader *rs = reader_of(&signed_in);
    cleanup_serve_path_info obi_serve_path_info *signed_info = NULL;
    assert_ok(obi_serve_read_export_trailer(rs, &signed_info, err_ptr_));
    assert_int_equal(obi_serve_reader_offset(rs), signed_in.len - 8);

    obi_error *err = NULL;
    obi_serve_path_info *none = NULL;
    cleanup_buf obi_buf bad = OBI_BUF_INIT;
    put_u64(&bad, 0x4558494f);
    cleanup_serve_reader obi_serve_reader *rb = reader_of(&bad);
    assert_fails_with(err, obi_serve_read_export_trailer(rb, &none, &err), -EINVAL,
                      "serve: offset 0: ImportPaths: expected the export magic 0x4558494e");
    cleanup_buf obi_buf marker = OBI_BUF_INIT;
    put_u64(&marker, 1);
    put_u64(&marker, 0);
    put_u64(&marker, 2);
    cleanup_serve_reader obi_serve_reader *rm = reader_of(&marker);
    assert_int_equal(obi_serve_read_import_marker(rm, NULL), 1);
    assert_int_equal(obi_serve_read_import_marker(rm, NULL), 0);
    assert_fails_with(err, obi_serve_read_import_marker(rm, &err), -EINVAL,
                      "serve: offset 16: ImportPaths: expected 1 (a path follows) or 0");
}

static void test_path_info_reply_by_version(void **state)
{
    (void)state;
    cleanup_serve_path_info obi_serve_path_info *info = obi_serve_path_info_new();
    info->path = strdup(PATH_B);
    info->nar_size = 120;
    assert_int_equal(obi_hex_decode("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b98"
                                    "24",
                                    64, info->nar_hash, 32),
                     0);
    /* minor 3 (older than served, but the layout is defined): no hash, ca or sigs */
    cleanup_buf obi_buf v3 = OBI_BUF_INIT, v4 = OBI_BUF_INIT;
    cleanup_serve_writer obi_serve_writer *w3 = NULL, *w4 = NULL;
    assert_ok(obi_serve_writer_new_buf(&v3, &w3, err_ptr_));
    assert_ok(obi_serve_writer_new_buf(&v4, &w4, err_ptr_));
    assert_ok(obi_serve_write_path_info(w3, 0x203, info, err_ptr_));
    assert_ok(obi_serve_write_path_info(w4, 0x204, info, err_ptr_));
    cleanup_buf obi_buf want = OBI_BUF_INIT;
    put_str(&want, PATH_B);
    put_str(&want, "");  /* deriver */
    put_u64(&want, 0);   /* references */
    put_u64(&want, 120); /* download size */
    put_u64(&want, 120);
    assert_int_equal(v3.len, want.len);
    assert_memory_equal(v3.data, want.data, want.len);
    put_str(&want, "sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic");
    put_str(&want, "");
    put_u64(&want, 0);
    assert_int_equal(v4.len, want.len);
    assert_memory_equal(v4.data, want.data, want.len);
}

/* ---- builds ---- */

/* BuildDerivation as LegacySSHStore::buildDerivation writes it (after the command), outputs
 * given in the order passed (Nix sends them sorted). */
static void put_basic_derivation(obi_buf *b, const char *const *outputs, const char *hash_algo,
                                 const char *hash)
{
    put_str(b, DRV_PATH);
    size_t n = 0;
    while (outputs[n])
        n++;
    put_u64(b, n);
    for (size_t i = 0; i < n; i++) {
        char path[128];
        snprintf(path, sizeof path, "/nix/store/" H32A "-c-%s", outputs[i]);
        put_str(b, outputs[i]);
        put_str(b, path);
        put_str(b, hash_algo);
        put_str(b, hash);
    }
    put_strs(b, (const char *const[]){PATH_B, PATH_A, NULL});
    put_str(b, "x86_64-linux");
    put_str(b, PATH_B "/bin/sh");
    put_strs(b, (const char *const[]){"-c", "echo hi > $out", NULL});
    put_u64(b, 2);
    put_str(b, "out");
    put_str(b, "/nix/store/" H32A "-c-out");
    put_str(b, "name");
    put_str(b, "c");
}

static void put_options(obi_buf *b, unsigned minor)
{
    put_u64(b, 30);   /* maxSilentTime */
    put_u64(b, 3600); /* buildTimeout */
    if (minor >= 2)
        put_u64(b, 1 << 20); /* maxLogSize */
    if (minor >= 3) {
        put_u64(b, 1); /* buildRepeat */
        put_u64(b, 1); /* enforceDeterminism */
    }
    if (minor >= 7)
        put_u64(b, 1); /* keepFailed */
}

static void test_build_derivation_request_at_2_7_and_2_4(void **state)
{
    (void)state;
    static const unsigned minors[] = {7, 4};
    for (size_t k = 0; k < OBI_ARRAY_SIZE(minors); k++) {
        cleanup_buf obi_buf in = OBI_BUF_INIT;
        put_basic_derivation(&in, (const char *const[]){"out", "dev", NULL}, "", "");
        put_options(&in, minors[k]);
        cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
        cleanup_serve_build_request obi_serve_build_request *req = NULL;
        assert_ok(obi_serve_read_build_derivation(r, 0x200 | minors[k], &req, err_ptr_));
        assert_int_equal(obi_serve_reader_offset(r), in.len);
        assert_string_equal(req->drv_path, DRV_PATH);
        obi_derivation *drv = req->drv;
        assert_int_equal(drv->n_outputs, 2);
        assert_string_equal(drv->outputs[0].name, "dev"); /* sorted, as Nix's std::map */
        assert_string_equal(drv->outputs[1].name, "out");
        assert_int_equal(drv->n_input_drvs, 0);
        assert_int_equal(drv->n_input_srcs, 2);
        assert_string_equal(drv->input_srcs[0], PATH_A);
        assert_string_equal(drv->system, "x86_64-linux");
        assert_int_equal(drv->n_args, 2);
        assert_int_equal(drv->n_env, 2);
        assert_string_equal(drv->env[0].key, "name");
        assert_int_equal(req->options.max_silent_time, 30);
        assert_int_equal(req->options.build_timeout, 3600);
        assert_int_equal(req->options.max_log_size, 1 << 20);
        assert_int_equal(req->options.build_repeat, 1);
        assert_true(req->options.enforce_determinism);
        assert_int_equal(req->options.keep_failed, minors[k] >= 7);
        /* what the build adapter does with it: a .drv that parses back */
        cleanup_free char *aterm = NULL;
        size_t len = 0;
        assert_ok(obi_derivation_serialize(drv, &aterm, &len, err_ptr_));
        cleanup_derivation obi_derivation *again = NULL;
        assert_ok(obi_derivation_parse(aterm, len, &again, err_ptr_));
    }
}

static void test_build_derivation_fixed_output(void **state)
{
    (void)state;
    cleanup_buf obi_buf in = OBI_BUF_INIT;
    put_basic_derivation(&in, (const char *const[]){"out", NULL}, "r:sha256",
                         "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    put_options(&in, 6);
    cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
    cleanup_serve_build_request obi_serve_build_request *req = NULL;
    assert_ok(obi_serve_read_build_derivation(r, 0x206, &req, err_ptr_));
    assert_true(obi_derivation_is_fixed_output(req->drv));
}

static void build_derivation_fails(const char *const *outputs, const char *algo, const char *hash,
                                   int code, const char *needle)
{
    cleanup_buf obi_buf in = OBI_BUF_INIT;
    put_basic_derivation(&in, outputs, algo, hash);
    put_options(&in, 7);
    cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
    obi_serve_build_request *req = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_serve_read_build_derivation(r, 0x207, &req, &err), code, needle);
    assert_null(req);
}

static void test_build_derivation_refusals(void **state)
{
    (void)state;
    /* drv path 8+56; count 8; the first output's name at 72, its path at 88, algo at 152 */
    build_derivation_fails((const char *const[]){"out", "out", NULL}, "", "", -EINVAL,
                           "BuildDerivation.outputs: output 'out' appears twice");
    build_derivation_fails((const char *const[]){"o/t", NULL}, "", "", -EINVAL,
                           "serve: offset 72: BuildDerivation.outputs[0].name: 'o/t' is not an "
                           "output name");
    build_derivation_fails((const char *const[]){"out", NULL}, "r:crc32", "", -EINVAL,
                           "serve: offset 152: BuildDerivation.outputs[0].hashAlgo:");
    build_derivation_fails((const char *const[]){"out", NULL}, "sha256", "ABCD", -EINVAL,
                           "BuildDerivation.outputs[0].hash: expected lowercase hex");
    build_derivation_fails((const char *const[]){"out", NULL}, "", "abcd", -EINVAL,
                           "BuildDerivation.outputs[0].hash: expected lowercase hex with a hash "
                           "algorithm");
    build_derivation_fails((const char *const[]){NULL}, "", "", -EINVAL,
                           "serve: offset 64: BuildDerivation.outputs: none");

    /* a floating content-addressed output (no path) and a duplicate env key */
    obi_error *err = NULL;
    obi_serve_build_request *req = NULL;
    cleanup_buf obi_buf floating = OBI_BUF_INIT;
    put_str(&floating, DRV_PATH);
    put_u64(&floating, 1);
    put_str(&floating, "out");
    put_str(&floating, "");
    put_str(&floating, "r:sha256");
    put_str(&floating, "");
    cleanup_serve_reader obi_serve_reader *rf = reader_of(&floating);
    assert_fails_with(err, obi_serve_read_build_derivation(rf, 0x207, &req, &err), -ENOTSUP,
                      "serve: offset 88: BuildDerivation.outputs[0].path: output 'out' has no "
                      "path");

    cleanup_buf obi_buf dup_env = OBI_BUF_INIT;
    put_basic_derivation(&dup_env, (const char *const[]){"out", NULL}, "", "");
    /* replace the env (count 2, out, name) with a duplicate: rebuild from scratch instead */
    cleanup_buf obi_buf in = OBI_BUF_INIT;
    put_str(&in, DRV_PATH);
    put_u64(&in, 1);
    put_str(&in, "out");
    put_str(&in, "/nix/store/" H32A "-c");
    put_str(&in, "");
    put_str(&in, "");
    put_u64(&in, 0); /* inputSrcs */
    put_str(&in, "x86_64-linux");
    put_str(&in, "/bin/sh");
    put_u64(&in, 0); /* args */
    put_u64(&in, 2);
    put_str(&in, "k");
    put_str(&in, "1");
    put_str(&in, "k");
    put_str(&in, "2");
    put_options(&in, 7);
    cleanup_serve_reader obi_serve_reader *rd = reader_of(&in);
    assert_fails_with(err, obi_serve_read_build_derivation(rd, 0x207, &req, &err), -EINVAL,
                      "BuildDerivation.env: 'k' appears twice");

    cleanup_buf obi_buf not_drv = OBI_BUF_INIT;
    put_str(&not_drv, PATH_B);
    cleanup_serve_reader obi_serve_reader *rn = reader_of(&not_drv);
    assert_fails_with(err, obi_serve_read_build_derivation(rn, 0x207, &req, &err), -EINVAL,
                      "serve: offset 0: BuildDerivation.drvPath: '" PATH_B "' does not end in "
                      ".drv");
}

static void test_build_result_by_version(void **state)
{
    (void)state;
    obi_serve_build_result result = {
        .status = OBI_SERVE_BUILT,
        .error_msg = strdup(""),
        .times_built = 1,
        .start_time = 100,
        .stop_time = 102,
    };
    result.built_outputs = calloc(1, sizeof *result.built_outputs);
    result.built_outputs[0].id = strdup("sha256:00!out");
    result.built_outputs[0].json = strdup("{}");
    result.n_built_outputs = 1;

    cleanup_buf obi_buf want = OBI_BUF_INIT;
    put_u64(&want, 0);
    put_str(&want, "");
    size_t v2_len = want.len;
    put_u64(&want, 1);
    put_u64(&want, 0);
    put_u64(&want, 100);
    put_u64(&want, 102);
    size_t v4_len = want.len;
    put_u64(&want, 1);
    put_str(&want, "sha256:00!out");
    put_str(&want, "{}");

    static const struct {
        unsigned version;
        size_t len;
    } cases[] = {{0x202, 0}, {0x204, 0}, {0x205, 0}, {0x206, 0}, {0x207, 0}};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        cleanup_buf obi_buf out = OBI_BUF_INIT;
        cleanup_serve_writer obi_serve_writer *w = NULL;
        assert_ok(obi_serve_writer_new_buf(&out, &w, err_ptr_));
        assert_ok(obi_serve_write_build_result(w, cases[i].version, &result, err_ptr_));
        unsigned minor = OBI_SERVE_MINOR(cases[i].version);
        size_t len = minor >= 6 ? want.len : minor >= 3 ? v4_len : v2_len;
        assert_int_equal(out.len, len);
        assert_memory_equal(out.data, want.data, len);
    }
    obi_serve_build_result_clear(&result);
}

static void test_build_paths_request(void **state)
{
    (void)state;
    cleanup_buf obi_buf in = OBI_BUF_INIT;
    put_strs(&in, (const char *const[]){DRV_PATH "!out", NULL});
    put_options(&in, 5);
    cleanup_serve_reader obi_serve_reader *r = reader_of(&in);
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    obi_serve_build_options o;
    assert_ok(obi_serve_read_build_paths(r, 0x205, &paths, &n, &o, err_ptr_));
    assert_int_equal(n, 1);
    assert_string_equal(paths[0], DRV_PATH "!out");
    assert_int_equal(o.build_repeat, 1);
    assert_int_equal(obi_serve_reader_offset(r), in.len);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_string_is_length_bytes_and_zero_padding),
        cmocka_unit_test(test_string_refusals_name_offset_and_field),
        cmocka_unit_test(test_bool_is_zero_or_one),
        cmocka_unit_test(test_command_end_of_stream_is_clean_only_between_commands),
        cmocka_unit_test(test_command_reads_from_a_pipe),
        cmocka_unit_test(test_handshake_bytes),
        cmocka_unit_test(test_handshake_refuses_other_magic_and_versions),
        cmocka_unit_test(test_handshake_serves_newer_minor_as_2_7),
        cmocka_unit_test(test_store_path_set_is_sorted_and_unique),
        cmocka_unit_test(test_store_path_set_names_the_bad_element),
        cmocka_unit_test(test_list_count_is_bounded),
        cmocka_unit_test(test_request_budget_bounds_the_strings_of_one_request),
        cmocka_unit_test(test_sha256_in_every_spelling_nix_accepts),
        cmocka_unit_test(test_add_to_store_nar_header),
        cmocka_unit_test(test_add_to_store_nar_refusals),
        cmocka_unit_test(test_export_trailer_round_trip_and_refusals),
        cmocka_unit_test(test_path_info_reply_by_version),
        cmocka_unit_test(test_build_derivation_request_at_2_7_and_2_4),
        cmocka_unit_test(test_build_derivation_fixed_output),
        cmocka_unit_test(test_build_derivation_refusals),
        cmocka_unit_test(test_build_result_by_version),
        cmocka_unit_test(test_build_paths_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
