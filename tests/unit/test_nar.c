/*
 * Unit tests for NAR serialization and the NAR hash: exact bytes of small trees (written out
 * by hand), hashes that Nix 2.8 printed for the same trees (nix-hash --type sha256 --base32),
 * entries sorted bytewise, castore nodes giving the same NAR as the same tree on disk, and the
 * errors (unsupported file types, short blobs, sink failures).
 */
#include "test_helpers.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/nar.h"

static int buf_sink(void *ctx, const void *data, size_t len, obi_error **err)
{
    (void)err;
    return obi_buf_append(ctx, data, len);
}

static void write_text(const char *dir, const char *name, const char *text, mode_t mode)
{
    cleanup_free char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

static char *sub(const char *dir, const char *name)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    return path;
}

/* The tree that Nix hashed: hello (0644 "hello\n"), and tree/ with a.sh (0755 "#!/bin/sh\n"),
 * b (0644 "hello\n"), sub/eight (0644 "12345678") and sub/link -> ../b. */
static void make_tree(const char *dir)
{
    write_text(dir, "hello", "hello\n", 0644);
    cleanup_free char *tree = sub(dir, "tree");
    cleanup_free char *subdir = sub(dir, "tree/sub");
    assert_int_equal(mkdir(tree, 0755), 0);
    assert_int_equal(mkdir(subdir, 0755), 0);
    /* created out of order on purpose: the NAR sorts */
    write_text(tree, "b", "hello\n", 0644);
    write_text(tree, "a.sh", "#!/bin/sh\n", 0755);
    cleanup_free char *link = sub(subdir, "link");
    assert_int_equal(symlink("../b", link), 0);
    write_text(subdir, "eight", "12345678", 0644);
}

static void test_nar_of_regular_file_matches_hand_written_bytes(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    write_text(dir, "f", "hi", 0644);
    cleanup_free char *path = sub(dir, "f");
    cleanup_buf obi_buf nar = OBI_BUF_INIT;
    assert_ok(obi_nar_write_path(path, buf_sink, &nar, err_ptr_));
    static const uint8_t expected[] = {
        13,  0,   0,   0,   0,   0, 0, 0, 'n', 'i', 'x', '-', 'a', 'r', 'c', 'h',
        'i', 'v', 'e', '-', '1', 0, 0, 0, /* "nix-archive-1" padded to 16 */
        1,   0,   0,   0,   0,   0, 0, 0, '(', 0,   0,   0,   0,   0,   0,   0,   /* "(" */
        4,   0,   0,   0,   0,   0, 0, 0, 't', 'y', 'p', 'e', 0,   0,   0,   0,   /* "type" */
        7,   0,   0,   0,   0,   0, 0, 0, 'r', 'e', 'g', 'u', 'l', 'a', 'r', 0,   /* "regular" */
        8,   0,   0,   0,   0,   0, 0, 0, 'c', 'o', 'n', 't', 'e', 'n', 't', 's', /* "contents" */
        2,   0,   0,   0,   0,   0, 0, 0, 'h', 'i', 0,   0,   0,   0,   0,   0,   /* "hi" */
        1,   0,   0,   0,   0,   0, 0, 0, ')', 0,   0,   0,   0,   0,   0,   0,   /* ")" */
    };
    assert_int_equal(nar.len, sizeof expected);
    assert_memory_equal(nar.data, expected, sizeof expected);
    obi_test_tmpdir_remove(dir);
}

/* NAR token helpers for the larger expectations: each is one length-prefixed padded string. */
static void tok(obi_buf *b, const char *s, size_t len)
{
    uint8_t le[8] = {0};
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)len >> (8 * i));
    obi_buf_append(b, le, 8);
    obi_buf_append(b, s, len);
    static const uint8_t zeros[8];
    obi_buf_append(b, zeros, (8 - len % 8) % 8);
}
static void toks(obi_buf *b, const char *const *list)
{
    for (; *list; list++)
        tok(b, *list, strlen(*list));
}

static void test_nar_of_directory_sorts_entries_and_marks_executables(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *d = sub(dir, "d");
    assert_int_equal(mkdir(d, 0755), 0);
    write_text(d, "z", "", 0644);
    write_text(d, "B", "12345678", 0755); /* uppercase sorts before lowercase */
    cleanup_free char *link = sub(d, "l");
    assert_int_equal(symlink("/nowhere", link), 0);
    cleanup_buf obi_buf nar = OBI_BUF_INIT;
    assert_ok(obi_nar_write_path(d, buf_sink, &nar, err_ptr_));

    cleanup_buf obi_buf want = OBI_BUF_INIT;
    toks(&want, (const char *const[]){"nix-archive-1",
                                      "(",
                                      "type",
                                      "directory",
                                      "entry",
                                      "(",
                                      "name",
                                      "B",
                                      "node",
                                      "(",
                                      "type",
                                      "regular",
                                      "executable",
                                      "",
                                      "contents",
                                      "12345678",
                                      ")",
                                      ")",
                                      "entry",
                                      "(",
                                      "name",
                                      "l",
                                      "node",
                                      "(",
                                      "type",
                                      "symlink",
                                      "target",
                                      "/nowhere",
                                      ")",
                                      ")",
                                      "entry",
                                      "(",
                                      "name",
                                      "z",
                                      "node",
                                      "(",
                                      "type",
                                      "regular",
                                      "contents",
                                      "",
                                      ")",
                                      ")",
                                      ")",
                                      NULL});
    assert_int_equal(nar.len, want.len);
    assert_memory_equal(nar.data, want.data, want.len);
    obi_test_tmpdir_remove(dir);
}

static void test_nar_of_symlink_is_not_followed(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *link = sub(dir, "l");
    assert_int_equal(symlink(".", link), 0);
    cleanup_buf obi_buf nar = OBI_BUF_INIT;
    assert_ok(obi_nar_write_path(link, buf_sink, &nar, err_ptr_));
    cleanup_buf obi_buf want = OBI_BUF_INIT;
    toks(&want,
         (const char *const[]){"nix-archive-1", "(", "type", "symlink", "target", ".", ")", NULL});
    assert_int_equal(nar.len, want.len);
    assert_memory_equal(nar.data, want.data, want.len);
    obi_test_tmpdir_remove(dir);
}

static void test_nar_hash_equals_nix_hash_of_file_and_tree(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    make_tree(dir);
    cleanup_free char *hello = sub(dir, "hello");
    cleanup_free char *tree = sub(dir, "tree");
    obi_nar_hash h;
    /* nix-hash --type sha256 --base32 (Nix 2.8); sizes from nix-store --dump | wc -c */
    assert_ok(obi_nar_hash_path(hello, &h, err_ptr_));
    cleanup_free char *s1 = obi_nar_hash_to_string(&h);
    assert_string_equal(s1, "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw");
    assert_int_equal(h.size, 120);
    assert_ok(obi_nar_hash_path(tree, &h, err_ptr_));
    cleanup_free char *s2 = obi_nar_hash_to_string(&h);
    assert_string_equal(s2, "sha256:1wbszfghwzbvnk54dihj18zl6mfgddpmkvx6k0rkgss0qp9h4pb0");
    assert_int_equal(h.size, 1072);
    obi_test_tmpdir_remove(dir);
}

static void test_nar_rejects_special_files_naming_the_path(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *d = sub(dir, "d");
    assert_int_equal(mkdir(d, 0755), 0);
    cleanup_free char *fifo = sub(d, "fifo");
    assert_int_equal(mkfifo(fifo, 0644), 0);
    cleanup_buf obi_buf nar = OBI_BUF_INIT;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nar_write_path(d, buf_sink, &nar, &err), -EINVAL, fifo);
    obi_test_tmpdir_remove(dir);
}

static void test_nar_reports_missing_path(void **state)
{
    (void)state;
    obi_nar_hash h;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nar_hash_path("/nonexistent/obi-nar", &h, &err), -ENOENT,
                      "nar: stat /nonexistent/obi-nar");
}

static int failing_sink(void *ctx, const void *data, size_t len, obi_error **err)
{
    (void)ctx;
    (void)data;
    (void)len;
    return obi_error_set(err, -ENOSPC, "disk full");
}

static void test_nar_propagates_sink_errors(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    write_text(dir, "f", "x", 0644);
    cleanup_free char *path = sub(dir, "f");
    obi_error *err = NULL;
    assert_fails_with(err, obi_nar_write_path(path, failing_sink, NULL, &err), -ENOSPC,
                      "nar: sink: disk full");
    obi_test_tmpdir_remove(dir);
}

static void test_nar_streams_large_files_across_buffer_boundaries(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *path = sub(dir, "big");
    size_t size = 200 * 1024 + 3;
    cleanup_free char *data = malloc(size);
    for (size_t i = 0; i < size; i++)
        data[i] = (char)(i * 7);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    assert_int_equal(write(fd, data, size), (ssize_t)size);
    close(fd);
    cleanup_buf obi_buf nar = OBI_BUF_INIT;
    assert_ok(obi_nar_write_path(path, buf_sink, &nar, err_ptr_));
    cleanup_buf obi_buf want = OBI_BUF_INIT;
    toks(&want, (const char *const[]){"nix-archive-1", "(", "type", "regular", "contents", NULL});
    tok(&want, data, size);
    toks(&want, (const char *const[]){")", NULL});
    assert_int_equal(nar.len, want.len);
    assert_memory_equal(nar.data, want.data, want.len);
    obi_nar_hash h;
    assert_ok(obi_nar_hash_path(path, &h, err_ptr_));
    assert_int_equal(h.size, want.len);
    obi_test_tmpdir_remove(dir);
}

/* ---- castore nodes ---- */

static void put_file(obi_blob_service *blobs, obi_directory *dir, const char *name,
                     const char *contents, bool executable)
{
    obi_digest digest;
    assert_ok(obi_blob_put_bytes(blobs, contents, strlen(contents), &digest, err_ptr_));
    cleanup_node obi_node node = {0};
    assert_int_equal(
        obi_node_init_file(&node, name, strlen(name), &digest, strlen(contents), executable), 0);
    assert_int_equal(obi_directory_add(dir, &node), 0);
}

/* The tree make_tree writes under tree/, built directly in castore; *root names it "tree". */
static void put_tree(obi_blob_service *blobs, obi_directory_service *directories, obi_node *root)
{
    cleanup_directory obi_directory *sub = obi_directory_new();
    cleanup_directory obi_directory *top = obi_directory_new();
    assert_non_null(sub);
    assert_non_null(top);
    put_file(blobs, sub, "eight", "12345678", false);
    cleanup_node obi_node link = {0};
    assert_int_equal(obi_node_init_symlink(&link, "link", 4, "../b", 4), 0);
    assert_int_equal(obi_directory_add(sub, &link), 0);
    obi_directory_sort(sub);

    cleanup_directory_putter obi_directory_putter *putter = NULL;
    assert_ok(obi_directory_open_put(directories, &putter, err_ptr_));
    obi_digest sub_digest, top_digest;
    assert_ok(obi_directory_put(putter, sub, &sub_digest, err_ptr_));

    put_file(blobs, top, "b", "hello\n", false);
    put_file(blobs, top, "a.sh", "#!/bin/sh\n", true);
    cleanup_node obi_node sub_node = {0};
    assert_int_equal(
        obi_node_init_directory(&sub_node, "sub", 3, &sub_digest, obi_directory_size(sub)), 0);
    assert_int_equal(obi_directory_add(top, &sub_node), 0);
    obi_directory_sort(top);
    assert_ok(obi_directory_put(putter, top, &top_digest, err_ptr_));
    assert_ok(obi_directory_putter_finish(putter, &top_digest, err_ptr_));
    assert_int_equal(obi_node_init_directory(root, "tree", 4, &top_digest, obi_directory_size(top)),
                     0);
}

static void test_nar_of_castore_node_equals_nar_of_same_tree_on_disk(void **state)
{
    (void)state;
    cleanup_blob_service obi_blob_service *blobs = NULL;
    cleanup_directory_service obi_directory_service *directories = NULL;
    assert_ok(obi_memory_blob_service_new(&blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&directories, err_ptr_));
    cleanup_node obi_node root = {0};
    put_tree(blobs, directories, &root);

    cleanup_buf obi_buf from_node = OBI_BUF_INIT;
    assert_ok(obi_nar_write_node(blobs, directories, &root, buf_sink, &from_node, err_ptr_));
    char *dir = obi_test_tmpdir();
    make_tree(dir);
    cleanup_free char *tree = sub(dir, "tree");
    cleanup_buf obi_buf from_disk = OBI_BUF_INIT;
    assert_ok(obi_nar_write_path(tree, buf_sink, &from_disk, err_ptr_));
    assert_int_equal(from_node.len, from_disk.len);
    assert_memory_equal(from_node.data, from_disk.data, from_disk.len);

    obi_nar_hash h;
    assert_ok(obi_nar_hash_node(blobs, directories, &root, &h, err_ptr_));
    cleanup_free char *text = obi_nar_hash_to_string(&h);
    assert_string_equal(text, "sha256:1wbszfghwzbvnk54dihj18zl6mfgddpmkvx6k0rkgss0qp9h4pb0");
    assert_int_equal(h.size, 1072);
    obi_test_tmpdir_remove(dir);
}

static void test_nar_of_castore_symlink_and_file_roots(void **state)
{
    (void)state;
    cleanup_blob_service obi_blob_service *blobs = NULL;
    cleanup_directory_service obi_directory_service *directories = NULL;
    assert_ok(obi_memory_blob_service_new(&blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&directories, err_ptr_));
    cleanup_node obi_node link = {0};
    assert_int_equal(obi_node_init_symlink(&link, "l", 1, "/nowhere", 8), 0);
    cleanup_buf obi_buf nar = OBI_BUF_INIT;
    assert_ok(obi_nar_write_node(blobs, directories, &link, buf_sink, &nar, err_ptr_));
    cleanup_buf obi_buf want = OBI_BUF_INIT;
    toks(&want, (const char *const[]){"nix-archive-1", "(", "type", "symlink", "target", "/nowhere",
                                      ")", NULL});
    assert_int_equal(nar.len, want.len);
    assert_memory_equal(nar.data, want.data, want.len);

    obi_digest digest;
    assert_ok(obi_blob_put_bytes(blobs, "hello\n", 6, &digest, err_ptr_));
    cleanup_node obi_node file = {0};
    assert_int_equal(obi_node_init_file(&file, "hello", 5, &digest, 6, false), 0);
    obi_nar_hash h;
    assert_ok(obi_nar_hash_node(blobs, directories, &file, &h, err_ptr_));
    cleanup_free char *text = obi_nar_hash_to_string(&h);
    assert_string_equal(text, "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw");
}

static void test_nar_of_castore_node_rejects_blob_of_wrong_size(void **state)
{
    (void)state;
    cleanup_blob_service obi_blob_service *blobs = NULL;
    cleanup_directory_service obi_directory_service *directories = NULL;
    assert_ok(obi_memory_blob_service_new(&blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&directories, err_ptr_));
    obi_digest digest;
    assert_ok(obi_blob_put_bytes(blobs, "hello\n", 6, &digest, err_ptr_));
    cleanup_node obi_node shorter = {0}, longer = {0};
    assert_int_equal(obi_node_init_file(&shorter, "f", 1, &digest, 3, false), 0);
    assert_int_equal(obi_node_init_file(&longer, "f", 1, &digest, 10, false), 0);
    obi_nar_hash h;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nar_hash_node(blobs, directories, &shorter, &h, &err), -EIO,
                      "has more than 3 bytes, its node says 3");
    assert_fails_with(err, obi_nar_hash_node(blobs, directories, &longer, &h, &err), -EIO,
                      "has 6 bytes, its node says 10");
}

static void test_nar_of_castore_node_reports_missing_directory(void **state)
{
    (void)state;
    cleanup_blob_service obi_blob_service *blobs = NULL;
    cleanup_directory_service obi_directory_service *directories = NULL;
    assert_ok(obi_memory_blob_service_new(&blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&directories, err_ptr_));
    obi_digest digest;
    memset(digest.bytes, 7, sizeof digest.bytes);
    cleanup_node obi_node dir = {0};
    assert_int_equal(obi_node_init_directory(&dir, "d", 1, &digest, 1), 0);
    obi_nar_hash h;
    obi_error *err = NULL;
    /* the store's message names the digest in its own form; the code is what NAR passes on */
    assert_int_equal(obi_nar_hash_node(blobs, directories, &dir, &h, &err), -ENOENT);
    assert_non_null(err);
    obi_error_free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nar_of_regular_file_matches_hand_written_bytes),
        cmocka_unit_test(test_nar_of_directory_sorts_entries_and_marks_executables),
        cmocka_unit_test(test_nar_of_symlink_is_not_followed),
        cmocka_unit_test(test_nar_hash_equals_nix_hash_of_file_and_tree),
        cmocka_unit_test(test_nar_rejects_special_files_naming_the_path),
        cmocka_unit_test(test_nar_reports_missing_path),
        cmocka_unit_test(test_nar_propagates_sink_errors),
        cmocka_unit_test(test_nar_streams_large_files_across_buffer_boundaries),
        cmocka_unit_test(test_nar_of_castore_node_equals_nar_of_same_tree_on_disk),
        cmocka_unit_test(test_nar_of_castore_symlink_and_file_roots),
        cmocka_unit_test(test_nar_of_castore_node_rejects_blob_of_wrong_size),
        cmocka_unit_test(test_nar_of_castore_node_reports_missing_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
