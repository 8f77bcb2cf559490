/*
 * Unit tests for NAR -> castore (nar_ingest.h): a NAR written from a tree on disk ingests into
 * the very node obi_ingest_path makes of that tree, writes back byte for byte, and hashes as
 * the input; large files stream; and every way a NAR can be malformed or non-canonical is
 * refused naming its byte offset, leaving no directory behind.
 */
#include "test_helpers.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/ingest.h"
#include "ocibuild/nar.h"
#include "ocibuild/nar_ingest.h"

static int buf_sink(void *ctx, const void *data, size_t len, obi_error **err)
{
    (void)err;
    return obi_buf_append(ctx, data, len);
}

static void tok_n(obi_buf *b, const char *s, size_t len)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)len >> (8 * i));
    assert_int_equal(obi_buf_append(b, le, 8), 0);
    assert_int_equal(obi_buf_append(b, s, len), 0);
    static const uint8_t zeros[8];
    assert_int_equal(obi_buf_append(b, zeros, (8 - len % 8) % 8), 0);
}

static void toks(obi_buf *b, const char *const *list)
{
    for (; *list; list++)
        tok_n(b, *list, strlen(*list));
}

static int count_directory(const obi_digest *d, void *ctx, obi_error **err)
{
    (void)d;
    (void)err;
    (*(size_t *)ctx)++;
    return 0;
}

static size_t directories_stored(obi_directory_service *dirs)
{
    size_t n = 0;
    assert_ok(obi_directory_service_list(dirs, count_directory, &n, err_ptr_));
    return n;
}

static void make_tree(const obi_test_store_fixture *f)
{
    cleanup_free char *t = obi_test_path_in(f, "t");
    cleanup_free char *sub = obi_test_path_in(f, "t/sub");
    cleanup_free char *deep = obi_test_path_in(f, "t/sub/deep");
    assert_int_equal(mkdir(t, 0755), 0);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(mkdir(deep, 0755), 0);
    obi_test_write_text(f, "t/b", "hello\n", 0644);
    obi_test_write_text(f, "t/a.sh", "#!/bin/sh\n", 0755);
    obi_test_write_text(f, "t/B", "", 0644);
    obi_test_write_text(f, "t/sub/eight", "12345678", 0644);
    cleanup_free char *link = obi_test_path_in(f, "t/sub/link");
    assert_int_equal(symlink("../b", link), 0);
    /* a file larger than one chunk, so it streams */
    cleanup_free char *big = obi_test_path_in(f, "t/sub/deep/big");
    int fd = open(big, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    static char block[4096];
    for (int i = 0; i < 70; i++) {
        memset(block, 'a' + i % 26, sizeof block);
        assert_int_equal(write(fd, block, sizeof block), (ssize_t)sizeof block);
    }
    close(fd);
}

static void test_nar_ingest_gives_the_node_of_the_tree_and_writes_back_identically(void **state)
{
    obi_test_store_fixture *f = *state;
    make_tree(f);
    cleanup_free char *t = obi_test_path_in(f, "t");
    cleanup_buf obi_buf nar = OBI_BUF_INIT;
    assert_ok(obi_nar_write_path(t, buf_sink, &nar, err_ptr_));

    cleanup_node obi_node node = {0};
    obi_nar_hash hash;
    assert_ok(obi_nar_ingest_bytes(f->blobs, f->dirs, nar.data, nar.len,
                                   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-t", &node, &hash, err_ptr_));
    assert_int_equal(node.kind, OBI_NODE_DIRECTORY);
    assert_string_equal((const char *)node.name.data, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-t");
    assert_int_equal(hash.size, nar.len);
    obi_nar_hash on_disk;
    assert_ok(obi_nar_hash_path(t, &on_disk, err_ptr_));
    assert_memory_equal(hash.sha256, on_disk.sha256, 32);

    /* the same node as importing the tree itself */
    cleanup_node obi_node imported = {0};
    obi_ingest_options opts = {.name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-t"};
    assert_ok(obi_ingest_path(f->blobs, f->dirs, t, &opts, &imported, err_ptr_));
    assert_true(obi_digest_equal(&node.digest, &imported.digest));
    assert_int_equal(node.size, imported.size);

    /* and its NAR is the input, byte for byte */
    cleanup_buf obi_buf again = OBI_BUF_INIT;
    assert_ok(obi_nar_write_node(f->blobs, f->dirs, &node, buf_sink, &again, err_ptr_));
    assert_int_equal(again.len, nar.len);
    assert_memory_equal(again.data, nar.data, nar.len);
}

static void test_nar_ingest_file_and_symlink_roots(void **state)
{
    obi_test_store_fixture *f = *state;
    cleanup_buf obi_buf file = OBI_BUF_INIT;
    toks(&file, (const char *const[]){"nix-archive-1", "(", "type", "regular", "executable", "",
                                      "contents", "#!x", ")", NULL});
    cleanup_node obi_node node = {0};
    obi_nar_hash hash;
    assert_ok(
        obi_nar_ingest_bytes(f->blobs, f->dirs, file.data, file.len, "f", &node, &hash, err_ptr_));
    assert_int_equal(node.kind, OBI_NODE_FILE);
    assert_true(node.executable);
    assert_int_equal(node.size, 3);

    cleanup_buf obi_buf link = OBI_BUF_INIT;
    toks(&link, (const char *const[]){"nix-archive-1", "(", "type", "symlink", "target",
                                      "/nix/store/x", ")", NULL});
    cleanup_node obi_node lnode = {0};
    assert_ok(
        obi_nar_ingest_bytes(f->blobs, f->dirs, link.data, link.len, "l", &lnode, &hash, err_ptr_));
    assert_int_equal(lnode.kind, OBI_NODE_SYMLINK);
    assert_string_equal((const char *)lnode.target.data, "/nix/store/x");
    assert_int_equal(directories_stored(f->dirs), 0);
}

/* A NAR made of tokens must be refused with needle; no directory may be left stored. */
static void refuse(const obi_test_store_fixture *f, const obi_buf *nar, int code,
                   const char *needle)
{
    obi_node node = {0};
    obi_nar_hash hash;
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_nar_ingest_bytes(f->blobs, f->dirs, nar->data, nar->len, "x", &node, &hash, &err),
        code, needle);
    assert_int_equal(node.kind, 0);
    assert_int_equal(directories_stored(f->dirs), 0);
}

static void refuse_toks(const obi_test_store_fixture *f, const char *const *list, int code,
                        const char *needle)
{
    cleanup_buf obi_buf nar = OBI_BUF_INIT;
    toks(&nar, list);
    refuse(f, &nar, code, needle);
}

static void test_nar_ingest_refuses_malformed_input_naming_the_offset(void **state)
{
    obi_test_store_fixture *f = *state;
    refuse_toks(f, (const char *const[]){"nix-archive-2", NULL}, -EINVAL,
                "nar: offset 0: expected 'nix-archive-1', got 'nix-archive-2'");
    /* offset 24: after "nix-archive-1" (8 + 16) */
    refuse_toks(f, (const char *const[]){"nix-archive-1", "[", NULL}, -EINVAL,
                "nar: offset 24: expected '(', got '['");
    refuse_toks(f, (const char *const[]){"nix-archive-1", "(", "type", "fifo", NULL}, -EINVAL,
                "nar: offset 56: expected 'regular', 'directory' or 'symlink', got 'fifo'");
    /* "executable" after "contents" is not the canonical order */
    refuse_toks(f,
                (const char *const[]){"nix-archive-1", "(", "type", "regular", "contents", "x",
                                      "executable", "", ")", NULL},
                -EINVAL, "nar: offset 104: expected ')', got 'executable'");
    refuse_toks(
        f, (const char *const[]){"nix-archive-1", "(", "type", "regular", "executable", "1", NULL},
        -EINVAL, "nar: offset 96: the executable marker's value of 1 bytes (at most 0)");
    refuse_toks(
        f, (const char *const[]){"nix-archive-1", "(", "type", "symlink", "target", "", ")", NULL},
        -EINVAL, "nar: offset 88: symlink target is empty");
    /* entries out of order, duplicated, or badly named */
    refuse_toks(f,
                (const char *const[]){"nix-archive-1", "(", "type", "directory", "entry", "(",
                                      "name",          "b", "node", "(",         "type",  "symlink",
                                      "target",        "t", ")",    ")",         "entry", "(",
                                      "name",          "a", NULL},
                -EINVAL, "entry 'a' does not sort after 'b'");
    refuse_toks(f,
                (const char *const[]){"nix-archive-1", "(", "type", "directory", "entry", "(",
                                      "name",          "a", "node", "(",         "type",  "symlink",
                                      "target",        "t", ")",    ")",         "entry", "(",
                                      "name",          "a", NULL},
                -EINVAL, "entry 'a' does not sort after 'a'");
    refuse_toks(f,
                (const char *const[]){"nix-archive-1", "(", "type", "directory", "entry", "(",
                                      "name", "..", NULL},
                -EINVAL, "nar: offset 128: entry name");
    refuse_toks(f,
                (const char *const[]){"nix-archive-1", "(", "type", "directory", "entry", "(",
                                      "name", "a/b", NULL},
                -EINVAL, "nar: offset 128: entry name");
    refuse_toks(f,
                (const char *const[]){"nix-archive-1", "(", "type", "directory", "entry", "(",
                                      "name", "a", "nope", NULL},
                -EINVAL, "expected 'node', got 'nope'");
    refuse_toks(f, (const char *const[]){"nix-archive-1", "(", "type", "directory", "nope", NULL},
                -EINVAL, "nar: offset 80: expected 'entry' or ')', got 'nope'");
    /* cut short */
    refuse_toks(f, (const char *const[]){"nix-archive-1", "(", "type", "directory", NULL}, -EPIPE,
                "nar: offset 80: the NAR ends here, 8 bytes early");

    /* a token longer than any token is refused before it is read */
    cleanup_buf obi_buf long_token = OBI_BUF_INIT;
    toks(&long_token, (const char *const[]){"nix-archive-1", NULL});
    tok_n(&long_token, "0123456789abcdefXYZ", 19);
    refuse(f, &long_token, -EINVAL, "nar: offset 24: a token of 19 bytes (at most 16)");

    /* non-zero padding */
    cleanup_buf obi_buf pad = OBI_BUF_INIT;
    toks(&pad, (const char *const[]){"nix-archive-1", NULL});
    pad.data[21] = 'x';
    refuse(f, &pad, -EINVAL, "nar: offset 21: non-zero padding");

    /* bytes after the root's ")" */
    cleanup_buf obi_buf trailing = OBI_BUF_INIT;
    toks(&trailing, (const char *const[]){"nix-archive-1", "(", "type", "symlink", "target", "t",
                                          ")", ")", NULL});
    refuse(f, &trailing, -EINVAL, "nar: offset 120: 16 bytes after the end of the NAR");
}

static void test_nar_ingest_leaves_no_directory_when_a_subtree_fails(void **state)
{
    obi_test_store_fixture *f = *state;
    /* a complete subdirectory, then garbage in its parent: the subdirectory was put into the
     * putter but must not be committed */
    refuse_toks(f,
                (const char *const[]){"nix-archive-1", "(", "type", "directory", "entry", "(",
                                      "name", "a", "node", "(", "type", "directory", ")", ")",
                                      "garbage", NULL},
                -EINVAL, "expected 'entry' or ')', got 'garbage'");
}

static void test_nar_ingest_refuses_trees_deeper_than_castore_takes(void **state)
{
    obi_test_store_fixture *f = *state;
    cleanup_buf obi_buf nar = OBI_BUF_INIT;
    toks(&nar, (const char *const[]){"nix-archive-1", "(", "type", "directory", NULL});
    for (int i = 0; i < OBI_DIRECTORY_MAX_DEPTH; i++)
        toks(&nar, (const char *const[]){"entry", "(", "name", "d", "node", "(", "type",
                                         "directory", NULL});
    char needle[64];
    snprintf(needle, sizeof needle, "directories nested deeper than %d", OBI_DIRECTORY_MAX_DEPTH);
    refuse(f, &nar, -ELOOP, needle);
}

static int failing_source(void *ctx, void *buf, size_t len, obi_error **err)
{
    (void)ctx;
    (void)buf;
    (void)len;
    return obi_error_set(err, -EIO, "the link went down");
}

static void test_nar_ingest_passes_on_the_source_error(void **state)
{
    obi_test_store_fixture *f = *state;
    obi_node node = {0};
    obi_nar_hash hash;
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_nar_ingest(f->blobs, f->dirs, failing_source, NULL, "x", &node, &hash, &err), -EIO,
        "nar: offset 0: the link went down");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_nar_ingest_gives_the_node_of_the_tree_and_writes_back_identically,
            obi_test_store_setup, obi_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_nar_ingest_file_and_symlink_roots,
                                        obi_test_store_setup, obi_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_nar_ingest_refuses_malformed_input_naming_the_offset,
                                        obi_test_store_setup, obi_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_nar_ingest_leaves_no_directory_when_a_subtree_fails,
                                        obi_test_store_setup, obi_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_nar_ingest_refuses_trees_deeper_than_castore_takes,
                                        obi_test_store_setup, obi_test_store_teardown),
        cmocka_unit_test_setup_teardown(test_nar_ingest_passes_on_the_source_error,
                                        obi_test_store_setup, obi_test_store_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
