/*
 * Blob and directory services: one table of tests run against every backend (memory:// and
 * the on-disk default), then what only the on-disk one promises (files named by digest,
 * corruption detected, orphans removed, a killed writer leaves nothing visible), concurrency
 * (8 threads writing the same objects), and choosing a backend by URL.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dirent.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/ingest.h"
#include "ocibuild/node.h"
#include "ocibuild/store.h"
#include "ocibuild/store_verify.h"
#include "test_helpers.h"

/* ---- fixtures: one per backend ---- */

typedef enum backend_kind { BACKEND_MEMORY, BACKEND_LOCAL } backend_kind;

typedef struct fixture {
    backend_kind kind;
    char *tmp;  /* local: the store root's parent */
    char *root; /* local: the store root */
    obi_blob_service *blobs;
    obi_directory_service *dirs;
    pid_t child; /* local: a forked writer still alive, killed by teardown if a test fails */
} fixture;

static backend_kind memory_kind = BACKEND_MEMORY;
static backend_kind local_kind = BACKEND_LOCAL;

static int open_services(fixture *f)
{
    obi_error *err = NULL;
    int r;
    if (f->kind == BACKEND_MEMORY) {
        r = obi_memory_blob_service_new(&f->blobs, &err);
        if (r == 0)
            r = obi_memory_directory_service_new(&f->dirs, &err);
    } else {
        r = obi_local_blob_service_open(f->root, &f->blobs, &err);
        if (r == 0)
            r = obi_local_directory_service_open(f->root, &f->dirs, &err);
    }
    if (r < 0)
        fprintf(stderr, "open services: %s\n", err->message);
    obi_error_free(err);
    return r;
}

static void close_services(fixture *f)
{
    obi_blob_service_free(f->blobs);
    obi_directory_service_free(f->dirs);
    f->blobs = NULL;
    f->dirs = NULL;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->kind = *(backend_kind *)*state;
    if (f->kind == BACKEND_LOCAL) {
        f->tmp = obi_test_tmpdir();
        f->root = obi_path_join(f->tmp, "store");
    }
    *state = f;
    return open_services(f) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->child > 0) {
        kill(f->child, SIGKILL);
        waitpid(f->child, NULL, 0);
    }
    close_services(f);
    free(f->root);
    obi_test_tmpdir_remove(f->tmp);
    free(f);
    return 0;
}

/* Number of regular files anywhere under path (0 if it does not exist). */
static int count_files(const char *path)
{
    cleanup_dir DIR *dir = opendir(path);
    if (!dir)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        cleanup_free char *child = obi_path_join(path, e->d_name);
        struct stat st;
        if (lstat(child, &st) < 0)
            continue;
        n += S_ISDIR(st.st_mode) ? count_files(child) : 1;
    }
    return n;
}

static int count_in(const fixture *f, const char *sub)
{
    cleanup_free char *path = obi_path_join(f->root, sub);
    return count_files(path);
}

static void fill_pattern(uint8_t *data, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)((i * 31 + seed * 7 + (i >> 9)) & 0xff);
}

/* ---- blobs (every backend) ---- */

static void test_store_blob_put_get_round_trip(void **state)
{
    fixture *f = *state;
    static const size_t sizes[] = {0, 1, 1024, 1025, 200000};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(sizes); i++) {
        cleanup_free uint8_t *data = malloc(sizes[i] + 1);
        fill_pattern(data, sizes[i], (unsigned)i);
        obi_digest digest, expected;
        obi_digest_of(data, sizes[i], &expected);
        assert_ok(obi_blob_put_bytes(f->blobs, data, sizes[i], &digest, err_ptr_));
        assert_true(obi_digest_equal(&digest, &expected));
        cleanup_free uint8_t *back = NULL;
        size_t back_len = 0;
        assert_ok(obi_blob_get_bytes(f->blobs, &digest, SIZE_MAX, &back, &back_len, err_ptr_));
        assert_int_equal(back_len, sizes[i]);
        if (sizes[i])
            assert_memory_equal(back, data, sizes[i]);
    }
}

static void test_store_blob_streamed_in_pieces_equals_whole(void **state)
{
    fixture *f = *state;
    uint8_t data[5000];
    fill_pattern(data, sizeof data, 3);
    cleanup_blob_writer obi_blob_writer *w = NULL;
    assert_ok(obi_blob_open_write(f->blobs, &w, err_ptr_));
    for (size_t off = 0; off < sizeof data; off += 777) {
        size_t n = sizeof data - off < 777 ? sizeof data - off : 777;
        assert_ok(obi_blob_write(w, data + off, n, err_ptr_));
    }
    obi_digest digest, expected;
    assert_ok(obi_blob_finish(w, &digest, err_ptr_));
    obi_digest_of(data, sizeof data, &expected);
    assert_true(obi_digest_equal(&digest, &expected));
    obi_error *err = NULL;
    assert_fails_with(err, obi_blob_write(w, "x", 1, &err), -EINVAL, "after finish");
}

static void test_store_blob_has_reports_presence(void **state)
{
    fixture *f = *state;
    obi_digest digest;
    obi_digest_of("hello", 5, &digest);
    assert_int_equal(obi_blob_has(f->blobs, &digest, NULL), 0);
    obi_digest put;
    assert_ok(obi_blob_put_bytes(f->blobs, "hello", 5, &put, err_ptr_));
    assert_int_equal(obi_blob_has(f->blobs, &digest, NULL), 1);
}

static void test_store_blob_absent_is_enoent_naming_digest(void **state)
{
    fixture *f = *state;
    obi_digest digest;
    obi_digest_of("nowhere", 7, &digest);
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&digest, hex);
    obi_error *err = NULL;
    obi_blob_reader *reader = NULL;
    assert_fails_with(err, obi_blob_open_read(f->blobs, &digest, &reader, &err), -ENOENT, hex);
    assert_null(reader);
    uint8_t *data = NULL;
    size_t len = 0;
    assert_fails_with(err, obi_blob_get_bytes(f->blobs, &digest, 100, &data, &len, &err), -ENOENT,
                      hex);
    assert_null(data);
}

static void test_store_blob_get_bytes_refuses_oversized(void **state)
{
    fixture *f = *state;
    obi_digest digest;
    assert_ok(obi_blob_put_bytes(f->blobs, "0123456789", 10, &digest, err_ptr_));
    obi_error *err = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    assert_fails_with(err, obi_blob_get_bytes(f->blobs, &digest, 9, &data, &len, &err), -EFBIG,
                      "larger than 9 bytes");
    assert_null(data);
}

static void test_store_blob_writer_closed_without_finish_leaves_nothing(void **state)
{
    fixture *f = *state;
    obi_blob_writer *w = NULL;
    assert_ok(obi_blob_open_write(f->blobs, &w, err_ptr_));
    assert_ok(obi_blob_write(w, "partial", 7, err_ptr_));
    obi_blob_writer_close(w);
    obi_digest digest;
    obi_digest_of("partial", 7, &digest);
    assert_int_equal(obi_blob_has(f->blobs, &digest, NULL), 0);
    if (f->kind == BACKEND_LOCAL) {
        assert_int_equal(count_in(f, "blobs"), 0);
        assert_int_equal(count_in(f, "tmp"), 0);
    }
}

/* ---- directories (every backend) ---- */

/* A small tree with a shared subdirectory:
 *   root/ {a/ {f1, x/}, b/ {x/, y/}, c/ {f2}}     x/ {fx}   y/ {link -> target}
 * Built leaves first into dirs[] in the order x, y, a, b, c, root. */
typedef struct tree {
    obi_directory *dirs[6];
    obi_digest digests[6];
} tree;
enum { T_X, T_Y, T_A, T_B, T_C, T_ROOT };

static void add_dir(obi_directory *parent, const char *name, const tree *t, int which)
{
    obi_node node;
    assert_ok(obi_node_init_directory(&node, name, strlen(name), &t->digests[which],
                                      obi_directory_size(t->dirs[which])));
    assert_ok(obi_directory_add(parent, &node));
    obi_node_clear(&node);
}

static void add_file(obi_directory *parent, const char *name, const char *content)
{
    obi_digest d;
    obi_digest_of(content, strlen(content), &d);
    obi_node node;
    assert_ok(obi_node_init_file(&node, name, strlen(name), &d, strlen(content), false));
    assert_ok(obi_directory_add(parent, &node));
    obi_node_clear(&node);
}

static void finish_dir(tree *t, int which)
{
    obi_directory_sort(t->dirs[which]);
    assert_ok(obi_directory_digest(t->dirs[which], &t->digests[which], err_ptr_));
}

static void tree_build(tree *t)
{
    for (int i = 0; i < 6; i++)
        t->dirs[i] = obi_directory_new();
    add_file(t->dirs[T_X], "fx", "x content");
    finish_dir(t, T_X);
    obi_node link;
    assert_ok(obi_node_init_symlink(&link, "link", 4, "target", 6));
    assert_ok(obi_directory_add(t->dirs[T_Y], &link));
    obi_node_clear(&link);
    finish_dir(t, T_Y);
    add_file(t->dirs[T_A], "f1", "one");
    add_dir(t->dirs[T_A], "x", t, T_X);
    finish_dir(t, T_A);
    add_dir(t->dirs[T_B], "x", t, T_X);
    add_dir(t->dirs[T_B], "y", t, T_Y);
    finish_dir(t, T_B);
    add_file(t->dirs[T_C], "f2", "two");
    finish_dir(t, T_C);
    add_dir(t->dirs[T_ROOT], "a", t, T_A);
    add_dir(t->dirs[T_ROOT], "b", t, T_B);
    add_dir(t->dirs[T_ROOT], "c", t, T_C);
    finish_dir(t, T_ROOT);
}

static void tree_free(tree *t)
{
    for (int i = 0; i < 6; i++)
        obi_directory_free(t->dirs[i]);
}

static void put_tree(obi_directory_service *dirs, const tree *t, obi_digest *root)
{
    cleanup_directory_putter obi_directory_putter *p = NULL;
    assert_ok(obi_directory_open_put(dirs, &p, err_ptr_));
    for (int i = 0; i < 6; i++) {
        obi_digest d;
        assert_ok(obi_directory_put(p, t->dirs[i], &d, err_ptr_));
        assert_true(obi_digest_equal(&d, &t->digests[i]));
    }
    assert_ok(obi_directory_putter_finish(p, root, err_ptr_));
}

typedef struct visit_log {
    obi_digest seen[16];
    size_t n;
    size_t stop_after; /* 0: never */
} visit_log;

static int record_visit(const obi_directory *dir, const obi_digest *digest, void *ctx,
                        obi_error **err)
{
    (void)dir;
    visit_log *log = ctx;
    if (log->n < 16)
        log->seen[log->n] = *digest;
    log->n++;
    if (log->stop_after && log->n == log->stop_after)
        return obi_error_set(err, -ECANCELED, "stopped by the visitor");
    return 0;
}

static void test_store_directory_children_first_accepted_and_root_returned(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    obi_digest root;
    put_tree(f->dirs, &t, &root);
    assert_true(obi_digest_equal(&root, &t.digests[T_ROOT]));
    for (int i = 0; i < 6; i++) {
        cleanup_directory obi_directory *got = NULL;
        assert_ok(obi_directory_get(f->dirs, &t.digests[i], &got, err_ptr_));
        obi_digest d;
        assert_ok(obi_directory_digest(got, &d, err_ptr_));
        assert_true(obi_digest_equal(&d, &t.digests[i]));
    }
    tree_free(&t);
}

static void test_store_directory_empty_directory_round_trip(void **state)
{
    fixture *f = *state;
    cleanup_directory obi_directory *empty = obi_directory_new();
    cleanup_directory obi_directory *parent = obi_directory_new();
    obi_digest empty_digest, parent_digest, root;
    assert_ok(obi_directory_digest(empty, &empty_digest, err_ptr_));
    obi_node node;
    assert_ok(obi_node_init_directory(&node, "e", 1, &empty_digest, 0));
    assert_ok(obi_directory_add(parent, &node));
    obi_node_clear(&node);
    cleanup_directory_putter obi_directory_putter *p = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p, err_ptr_));
    assert_ok(obi_directory_put(p, empty, NULL, err_ptr_));
    assert_ok(obi_directory_put(p, parent, &parent_digest, err_ptr_));
    assert_ok(obi_directory_putter_finish(p, &root, err_ptr_));
    assert_true(obi_digest_equal(&root, &parent_digest));
    obi_error *err = NULL;
    assert_fails_with(err, obi_directory_put(p, empty, NULL, &err), -EINVAL, "after finish");
    cleanup_directory obi_directory *got = NULL;
    assert_ok(obi_directory_get(f->dirs, &empty_digest, &got, err_ptr_));
    assert_int_equal(got->n_directories + got->n_files + got->n_symlinks, 0);
    visit_log log = {0};
    assert_ok(obi_directory_get_recursive(f->dirs, &root, record_visit, &log, err_ptr_));
    assert_int_equal(log.n, 2);
    assert_true(obi_digest_equal(&log.seen[1], &empty_digest));
}

static void test_store_directory_putting_twice_is_idempotent(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    obi_digest r1, r2;
    put_tree(f->dirs, &t, &r1);
    put_tree(f->dirs, &t, &r2);
    assert_true(obi_digest_equal(&r1, &r2));
    tree_free(&t);
}

static void test_store_directory_child_from_earlier_putter_is_accepted(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    cleanup_directory_putter obi_directory_putter *p1 = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p1, err_ptr_));
    assert_ok(obi_directory_put(p1, t.dirs[T_X], NULL, err_ptr_));
    assert_ok(obi_directory_putter_finish(p1, NULL, err_ptr_));
    /* a/ refers to x/, stored by the first putter */
    cleanup_directory_putter obi_directory_putter *p2 = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p2, err_ptr_));
    assert_ok(obi_directory_put(p2, t.dirs[T_A], NULL, err_ptr_));
    obi_digest root;
    assert_ok(obi_directory_putter_finish(p2, &root, err_ptr_));
    assert_true(obi_digest_equal(&root, &t.digests[T_A]));
    tree_free(&t);
}

static void test_store_directory_missing_child_refused_naming_it(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&t.digests[T_X], hex);
    cleanup_directory_putter obi_directory_putter *p = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p, err_ptr_));
    obi_error *err = NULL;
    /* a/ before its child x/ */
    assert_fails_with(err, obi_directory_put(p, t.dirs[T_A], NULL, &err), -EINVAL,
                      "child directory 'x'");
    assert_fails_with(err, obi_directory_put(p, t.dirs[T_A], NULL, &err), -EINVAL, hex);
    tree_free(&t);
}

/* ---- the depth limit (OBI_DIRECTORY_MAX_DEPTH) ---- */

/* The directory one level above child (digest, size): {directories: [d -> child]}. */
static obi_directory *chain_parent(const obi_digest *child, uint64_t child_size)
{
    obi_directory *dir = obi_directory_new();
    obi_node node = {0};
    assert_int_equal(obi_node_init_directory(&node, "d", 1, child, child_size), 0);
    assert_int_equal(obi_directory_append_owned(dir, &node), 0);
    return dir;
}

/* Puts levels more directories on top of (digest, size) through p; returns the top's. */
static void put_chain(obi_directory_putter *p, size_t levels, obi_digest *digest, uint64_t *size)
{
    for (size_t i = 0; i < levels; i++) {
        cleanup_directory obi_directory *dir = chain_parent(digest, *size);
        assert_ok(obi_directory_put(p, dir, digest, err_ptr_));
        *size = obi_directory_size(dir);
    }
}

static void test_store_directory_deeper_than_the_limit_refused(void **state)
{
    fixture *f = *state;
    cleanup_directory obi_directory *leaf = obi_directory_new();
    cleanup_directory_putter obi_directory_putter *p = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p, err_ptr_));
    obi_digest digest;
    uint64_t size = 0;
    assert_ok(obi_directory_put(p, leaf, &digest, err_ptr_));
    put_chain(p, OBI_DIRECTORY_MAX_DEPTH - 1, &digest, &size); /* exactly the limit: fine */
    cleanup_directory obi_directory *too_deep = chain_parent(&digest, size);
    obi_error *err = NULL;
    assert_fails_with(err, obi_directory_put(p, too_deep, NULL, &err), -EINVAL,
                      "nested deeper than 2048 levels");
    assert_ok(obi_directory_putter_finish(p, NULL, err_ptr_));
}

static void test_store_directory_depth_counts_stored_children(void **state)
{
    fixture *f = *state;
    /* a stored chain one level short of the limit, made by an earlier putter */
    cleanup_directory obi_directory *leaf = obi_directory_new();
    cleanup_directory_putter obi_directory_putter *p1 = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p1, err_ptr_));
    obi_digest digest;
    uint64_t size = 0;
    assert_ok(obi_directory_put(p1, leaf, &digest, err_ptr_));
    put_chain(p1, OBI_DIRECTORY_MAX_DEPTH - 2, &digest, &size);
    assert_ok(obi_directory_putter_finish(p1, NULL, err_ptr_));
    /* one level more on top of it, in a new putter: exactly the limit */
    cleanup_directory_putter obi_directory_putter *p2 = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p2, err_ptr_));
    put_chain(p2, 1, &digest, &size);
    assert_ok(obi_directory_putter_finish(p2, NULL, err_ptr_));
    /* and one more: a remote client cannot put what local ingest refuses */
    cleanup_directory_putter obi_directory_putter *p3 = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p3, err_ptr_));
    cleanup_directory obi_directory *too_deep = chain_parent(&digest, size);
    obi_error *err = NULL;
    assert_fails_with(err, obi_directory_put(p3, too_deep, NULL, &err), -EINVAL,
                      "nested deeper than 2048 levels");
    /* a wide stored directory (size far above the limit, 1 level deep) is counted exactly */
    cleanup_directory obi_directory *wide = obi_directory_new();
    obi_digest empty;
    obi_digest_of((const uint8_t *)"", 0, &empty);
    for (int i = 0; i < 3000; i++) {
        char name[16];
        snprintf(name, sizeof name, "f%05d", i);
        obi_node file = {0};
        assert_int_equal(obi_node_init_file(&file, name, strlen(name), &empty, 0, false), 0);
        assert_int_equal(obi_directory_append_owned(wide, &file), 0);
    }
    obi_digest wide_digest;
    assert_ok(obi_directory_put(p3, wide, &wide_digest, err_ptr_));
    assert_ok(obi_directory_putter_finish(p3, NULL, err_ptr_));
    cleanup_directory_putter obi_directory_putter *p4 = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p4, err_ptr_));
    uint64_t wide_size = obi_directory_size(wide);
    put_chain(p4, 10, &wide_digest, &wide_size);
    assert_ok(obi_directory_putter_finish(p4, NULL, err_ptr_));
}

static void test_store_directory_child_with_wrong_size_refused(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    cleanup_directory_putter obi_directory_putter *p = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p, err_ptr_));
    assert_ok(obi_directory_put(p, t.dirs[T_X], NULL, err_ptr_));
    cleanup_directory obi_directory *liar = obi_directory_new();
    obi_node node;
    assert_ok(obi_node_init_directory(&node, "x", 1, &t.digests[T_X], 99));
    assert_ok(obi_directory_add(liar, &node));
    obi_node_clear(&node);
    obi_error *err = NULL;
    assert_fails_with(err, obi_directory_put(p, liar, NULL, &err), -EINVAL,
                      "has size 1, but its entry says 99");
    tree_free(&t);
}

static void test_store_directory_invalid_directory_refused(void **state)
{
    fixture *f = *state;
    cleanup_directory obi_directory *bad = obi_directory_new();
    add_file(bad, "b", "1");
    add_file(bad, "a", "2"); /* not sorted */
    cleanup_directory_putter obi_directory_putter *p = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p, err_ptr_));
    obi_error *err = NULL;
    obi_digest d;
    int r = obi_directory_put(p, bad, &d, &err);
    assert_int_equal(r, -EINVAL);
    assert_non_null(err);
    obi_error_free(err);
    err = NULL;
    assert_fails_with(err, obi_directory_putter_finish(p, &d, &err), -EINVAL,
                      "no directories were put");
}

static void test_store_directory_abort_leaves_nothing(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    obi_directory_putter *p = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p, err_ptr_));
    for (int i = 0; i < 6; i++)
        assert_ok(obi_directory_put(p, t.dirs[i], NULL, err_ptr_));
    obi_directory_putter_close(p);
    /* reopen so a backend that kept something in its connection would show it */
    close_services(f);
    assert_int_equal(open_services(f), 0);
    for (int i = 0; i < 6; i++) {
        char hex[OBI_DIGEST_HEX_LEN + 1];
        obi_digest_to_hex(&t.digests[i], hex);
        obi_directory *got = NULL;
        obi_error *err = NULL;
        assert_fails_with(err, obi_directory_get(f->dirs, &t.digests[i], &got, &err), -ENOENT, hex);
        assert_null(got);
    }
    tree_free(&t);
}

static void test_store_directory_recursive_root_first_breadth_first_each_once(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    obi_digest root;
    put_tree(f->dirs, &t, &root);
    visit_log log = {0};
    assert_ok(obi_directory_get_recursive(f->dirs, &root, record_visit, &log, err_ptr_));
    static const int expected[] = {T_ROOT, T_A, T_B, T_C, T_X, T_Y};
    assert_int_equal(log.n, 6);
    for (size_t i = 0; i < 6; i++)
        assert_true(obi_digest_equal(&log.seen[i], &t.digests[expected[i]]));
    tree_free(&t);
}

static void test_store_directory_recursive_stops_on_visitor_error(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    obi_digest root;
    put_tree(f->dirs, &t, &root);
    visit_log log = {.stop_after = 2};
    obi_error *err = NULL;
    assert_fails_with(err, obi_directory_get_recursive(f->dirs, &root, record_visit, &log, &err),
                      -ECANCELED, "stopped by the visitor");
    assert_int_equal(log.n, 2);
    tree_free(&t);
}

static void test_store_directory_recursive_absent_root_is_enoent(void **state)
{
    fixture *f = *state;
    obi_digest d;
    obi_digest_of("no such directory", 17, &d);
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&d, hex);
    visit_log log = {0};
    obi_error *err = NULL;
    assert_fails_with(err, obi_directory_get_recursive(f->dirs, &d, record_visit, &log, &err),
                      -ENOENT, hex);
    assert_int_equal(log.n, 0);
}

static uint8_t *encode_copy(const obi_directory *dir, size_t *len)
{
    uint8_t *data = NULL;
    assert_ok(obi_directory_encode(dir, &data, len, err_ptr_));
    return data;
}

static void test_store_directory_put_encoded_keeps_canonical_bytes(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    cleanup_directory_putter obi_directory_putter *p = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p, err_ptr_));
    for (int i = 0; i < 6; i++) {
        size_t len = 0;
        uint8_t *data = encode_copy(t.dirs[i], &len);
        obi_digest d;
        assert_ok(obi_directory_put_encoded(p, data, len, &d, err_ptr_));
        assert_true(obi_digest_equal(&d, &t.digests[i]));
    }
    obi_digest root;
    assert_ok(obi_directory_putter_finish(p, &root, err_ptr_));
    assert_true(obi_digest_equal(&root, &t.digests[T_ROOT]));
    visit_log log = {0};
    assert_ok(obi_directory_get_recursive(f->dirs, &root, record_visit, &log, err_ptr_));
    assert_int_equal(log.n, 6);
    tree_free(&t);
}

static void test_store_directory_put_encoded_refuses_like_put(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    cleanup_directory_putter obi_directory_putter *p = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p, err_ptr_));
    size_t len = 0;
    obi_error *err = NULL;
    /* a/ before its child x/ */
    uint8_t *data = encode_copy(t.dirs[T_A], &len);
    assert_fails_with(err, obi_directory_put_encoded(p, data, len, NULL, &err), -EINVAL,
                      "child directory 'x'");
    data = encode_copy(t.dirs[T_X], &len);
    assert_ok(obi_directory_put_encoded(p, data, len, NULL, err_ptr_));
    cleanup_directory obi_directory *liar = obi_directory_new();
    obi_node node;
    assert_ok(obi_node_init_directory(&node, "x", 1, &t.digests[T_X], 99));
    assert_ok(obi_directory_add(liar, &node));
    obi_node_clear(&node);
    data = encode_copy(liar, &len);
    assert_fails_with(err, obi_directory_put_encoded(p, data, len, NULL, &err), -EINVAL,
                      "has size 1, but its entry says 99");
    uint8_t *garbage = malloc(3);
    memcpy(garbage, "\x0a\x05x", 3);
    assert_fails_with(err, obi_directory_put_encoded(p, garbage, 3, NULL, &err), -EINVAL,
                      "exceeds the remaining");
    tree_free(&t);
}

static void test_store_directory_unreachable_directory_refused_naming_it(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    cleanup_free char *y = obi_digest_to_b3_string(&t.digests[T_Y]);
    for (int encoded = 0; encoded < 2; encoded++) {
        /* x/, y/, then a/ (holding x/ only) as the root: y/ belongs to no tree of the Put */
        cleanup_directory_putter obi_directory_putter *p = NULL;
        assert_ok(obi_directory_open_put(f->dirs, &p, err_ptr_));
        const int order[] = {T_X, T_Y, T_A};
        for (size_t i = 0; i < 3; i++) {
            size_t len = 0;
            if (encoded) {
                uint8_t *data = encode_copy(t.dirs[order[i]], &len);
                assert_ok(obi_directory_put_encoded(p, data, len, NULL, err_ptr_));
            } else
                assert_ok(obi_directory_put(p, t.dirs[order[i]], NULL, err_ptr_));
        }
        obi_error *err = NULL;
        obi_digest root;
        assert_fails_with(err, obi_directory_putter_finish(p, &root, &err), -EINVAL, y);
        assert_fails_with(err, obi_directory_putter_finish(p, &root, &err), -EINVAL,
                          "directories[1]");
    }
    obi_directory *none = NULL;
    obi_error *err = NULL;
    assert_int_equal(obi_directory_get(f->dirs, &t.digests[T_A], &none, &err), -ENOENT);
    obi_error_free(err);
    tree_free(&t);
}

static void test_store_directory_put_encoded_reencodes_small_other_forms_only(void **state)
{
    fixture *f = *state;
    /* One file entry with executable=false written out: valid, not canonical. */
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_file(dir, "f", "content");
    size_t len = 0;
    cleanup_free uint8_t *canonical = encode_copy(dir, &len);
    uint8_t *other = malloc(len + 2);
    memcpy(other, canonical, len);
    other[1] += 2; /* the entry grows by two bytes */
    other[len] = 0x20;
    other[len + 1] = 0x00;
    cleanup_directory_putter obi_directory_putter *p = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &p, err_ptr_));
    obi_digest d, expected;
    assert_ok(obi_directory_put_encoded(p, other, len + 2, &d, err_ptr_));
    obi_digest_of(canonical, len, &expected);
    assert_true(obi_digest_equal(&d, &expected)); /* the digest of the canonical form */

    /* Above OBI_DIRECTORY_DECODE_MAX, another form is refused rather than decoded. */
    size_t big_len = OBI_DIRECTORY_DECODE_MAX + 16;
    uint8_t *big = calloc(1, big_len);
    size_t at = 0;
    big[at++] = 0x7a; /* unknown field 15, LEN */
    size_t body = big_len - 4;
    big[at++] = (uint8_t)(0x80 | (body & 0x7f));
    big[at++] = (uint8_t)(0x80 | ((body >> 7) & 0x7f));
    big[at++] = (uint8_t)(body >> 14);
    obi_error *err = NULL;
    /* The error says where the encoding departs from the canonical form. */
    assert_fails_with(err, obi_directory_put_encoded(p, big, big_len, NULL, &err), -EINVAL,
                      "bytes are re-encoded: field 15 at byte offset 0: not a field of "
                      "tvix.castore.v1.Directory");
}

static void test_store_directory_walk_yields_what_get_recursive_visits(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    obi_digest root;
    put_tree(f->dirs, &t, &root);
    cleanup_directory_walk obi_directory_walk *walk = NULL;
    assert_ok(obi_directory_walk_new(f->dirs, &root, &walk, err_ptr_));
    static const int expected[] = {T_ROOT, T_A, T_B, T_C, T_X, T_Y};
    for (size_t i = 0; i < 6; i++) {
        cleanup_directory obi_directory *dir = NULL;
        obi_digest d;
        obi_error *err = NULL;
        assert_int_equal(obi_directory_walk_next(walk, &dir, &d, &err), 1);
        assert_true(obi_digest_equal(&d, &t.digests[expected[i]]));
    }
    obi_directory *none = NULL;
    obi_digest d;
    obi_error *err = NULL;
    assert_int_equal(obi_directory_walk_next(walk, &none, &d, &err), 0);
    assert_null(none);
    tree_free(&t);
}

/* ---- concurrency (every backend) ---- */

#define N_THREADS 8

typedef struct racer {
    fixture *f;
    const uint8_t *data;
    size_t len;
    const tree *t;
    bool own_services; /* local: a separate instance per thread, as separate processes do */
    int result;
    obi_digest blob;
    obi_digest root;
} racer;

static pthread_barrier_t start_line;

static void *race(void *arg)
{
    racer *r = arg;
    obi_blob_service *blobs = r->f->blobs;
    obi_directory_service *dirs = r->f->dirs;
    obi_error *err = NULL;
    r->result = 0;
    if (r->own_services) {
        r->result = obi_local_blob_service_open(r->f->root, &blobs, &err);
        if (r->result == 0)
            r->result = obi_local_directory_service_open(r->f->root, &dirs, &err);
    }
    pthread_barrier_wait(&start_line);
    if (r->result == 0)
        r->result = obi_blob_put_bytes(blobs, r->data, r->len, &r->blob, &err);
    obi_directory_putter *p = NULL;
    if (r->result == 0)
        r->result = obi_directory_open_put(dirs, &p, &err);
    for (int i = 0; r->result == 0 && i < 6; i++)
        r->result = obi_directory_put(p, r->t->dirs[i], NULL, &err);
    if (r->result == 0)
        r->result = obi_directory_putter_finish(p, &r->root, &err);
    obi_directory_putter_close(p);
    if (err)
        fprintf(stderr, "racer: %s\n", err->message);
    obi_error_free(err);
    if (r->own_services) {
        obi_blob_service_free(blobs);
        obi_directory_service_free(dirs);
    }
    return NULL;
}

static void run_race(fixture *f, bool own_services)
{
    size_t len = 300000;
    cleanup_free uint8_t *data = malloc(len);
    fill_pattern(data, len, own_services ? 11 : 12);
    obi_digest expected;
    obi_digest_of(data, len, &expected);
    tree t;
    tree_build(&t);
    racer racers[N_THREADS];
    pthread_t threads[N_THREADS];
    pthread_barrier_init(&start_line, NULL, N_THREADS);
    for (int i = 0; i < N_THREADS; i++) {
        racers[i] =
            (racer){.f = f, .data = data, .len = len, .t = &t, .own_services = own_services};
        assert_int_equal(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start_line);
    for (int i = 0; i < N_THREADS; i++) {
        assert_int_equal(racers[i].result, 0);
        assert_true(obi_digest_equal(&racers[i].blob, &expected));
        assert_true(obi_digest_equal(&racers[i].root, &t.digests[T_ROOT]));
    }
    cleanup_free uint8_t *back = NULL;
    size_t back_len = 0;
    assert_ok(obi_blob_get_bytes(f->blobs, &expected, SIZE_MAX, &back, &back_len, err_ptr_));
    assert_int_equal(back_len, len);
    assert_memory_equal(back, data, len);
    visit_log log = {0};
    assert_ok(
        obi_directory_get_recursive(f->dirs, &t.digests[T_ROOT], record_visit, &log, err_ptr_));
    assert_int_equal(log.n, 6);
    if (f->kind == BACKEND_LOCAL) {
        assert_int_equal(count_in(f, "blobs"), 1); /* one intact object */
        assert_int_equal(count_in(f, "tmp"), 0);
    }
    tree_free(&t);
}

static void test_store_eight_threads_writing_same_objects_leave_one_intact(void **state)
{
    run_race(*state, false);
}

static void test_store_eight_instances_writing_same_objects_leave_one_intact(void **state)
{
    fixture *f = *state;
    if (f->kind != BACKEND_LOCAL)
        skip(); /* memory:// instances share nothing */
    run_race(f, true);
}

/* ---- on-disk backend only ---- */

static void test_store_local_blob_is_read_only_file_named_by_digest(void **state)
{
    fixture *f = *state;
    obi_digest digest;
    assert_ok(obi_blob_put_bytes(f->blobs, "named", 5, &digest, err_ptr_));
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&digest, hex);
    char rel[80];
    snprintf(rel, sizeof rel, "blobs/%.2s/%s", hex, hex);
    cleanup_free char *expected = obi_path_join(f->root, rel);
    cleanup_free char *path = NULL;
    assert_ok(obi_blob_local_path(f->blobs, &digest, &path, err_ptr_));
    assert_string_equal(path, expected);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0444);
    assert_int_equal(st.st_size, 5);
    obi_digest absent;
    obi_digest_of("absent", 6, &absent);
    char *none = NULL;
    obi_error *err = NULL;
    obi_digest_to_hex(&absent, hex);
    assert_fails_with(err, obi_blob_local_path(f->blobs, &absent, &none, &err), -ENOENT, hex);
    assert_null(none);
}

static void test_store_local_corrupted_blob_file_detected(void **state)
{
    fixture *f = *state;
    obi_digest digest;
    assert_ok(obi_blob_put_bytes(f->blobs, "pristine", 8, &digest, err_ptr_));
    cleanup_free char *path = NULL;
    assert_ok(obi_blob_local_path(f->blobs, &digest, &path, err_ptr_));
    assert_int_equal(chmod(path, 0644), 0);
    assert_ok(obi_write_file(path, "tampered", 8, 0644, err_ptr_));
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&digest, hex);
    obi_error *err = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    assert_fails_with(err, obi_blob_get_bytes(f->blobs, &digest, 100, &data, &len, &err), -EIO,
                      "is corrupted");
    assert_fails_with(err, obi_blob_get_bytes(f->blobs, &digest, 100, &data, &len, &err), -EIO,
                      hex);
    assert_null(data);
}

static void test_store_local_corrupted_sqlite_row_detected(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    obi_digest root;
    put_tree(f->dirs, &t, &root);
    cleanup_free char *db_path = obi_path_join(f->root, "directories.sqlite");
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "UPDATE directories SET data = "
                                        "data || X'00' WHERE digest = ?1",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    sqlite3_bind_blob(stmt, 1, t.digests[T_B].bytes, OBI_DIGEST_LEN, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_finalize(stmt);
    sqlite3_close(db);

    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&t.digests[T_B], hex);
    obi_error *err = NULL;
    obi_directory *got = NULL;
    assert_fails_with(err, obi_directory_get(f->dirs, &t.digests[T_B], &got, &err), -EIO,
                      "is corrupted");
    assert_fails_with(err, obi_directory_get(f->dirs, &t.digests[T_B], &got, &err), -EIO, hex);
    assert_null(got);
    /* the walk reaches b/ and fails there */
    visit_log log = {0};
    assert_fails_with(err, obi_directory_get_recursive(f->dirs, &root, record_visit, &log, &err),
                      -EIO, hex);
    tree_free(&t);
}

static void test_store_local_reopen_sees_committed_objects(void **state)
{
    fixture *f = *state;
    tree t;
    tree_build(&t);
    obi_digest root, blob;
    put_tree(f->dirs, &t, &root);
    assert_ok(obi_blob_put_bytes(f->blobs, "kept", 4, &blob, err_ptr_));
    close_services(f);
    assert_int_equal(open_services(f), 0);
    assert_int_equal(obi_blob_has(f->blobs, &blob, NULL), 1);
    visit_log log = {0};
    assert_ok(obi_directory_get_recursive(f->dirs, &root, record_visit, &log, err_ptr_));
    assert_int_equal(log.n, 6);
    tree_free(&t);
}

static void test_store_local_orphan_removed_but_live_writer_kept(void **state)
{
    fixture *f = *state;
    /* a live writer in this process: its temp file must survive a second service's start */
    cleanup_blob_writer obi_blob_writer *live = NULL;
    assert_ok(obi_blob_open_write(f->blobs, &live, err_ptr_));
    assert_ok(obi_blob_write(live, "live", 4, err_ptr_));
    /* an orphan: an unlocked file, as a dead writer leaves */
    cleanup_free char *orphan = obi_path_join(f->root, "tmp/w.orphan");
    assert_ok(obi_write_file(orphan, "dead", 4, 0600, err_ptr_));
    assert_int_equal(count_in(f, "tmp"), 2);
    cleanup_blob_service obi_blob_service *second = NULL;
    assert_ok(obi_local_blob_service_open(f->root, &second, err_ptr_));
    assert_int_equal(count_in(f, "tmp"), 1);
    assert_int_equal(access(orphan, F_OK), -1);
    obi_digest digest, expected;
    assert_ok(obi_blob_finish(live, &digest, err_ptr_));
    obi_digest_of("live", 4, &expected);
    assert_true(obi_digest_equal(&digest, &expected));
    assert_int_equal(obi_blob_has(second, &digest, NULL), 1);
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_int_equal(count_in(f, "blobs"), 1); /* finish is durable at once */
}

/* A child writes part of a blob and of a directory tree, tells the parent, and is SIGKILLed:
 * nothing it wrote is visible, and the next start removes its temporary file. */
static void test_store_local_killed_writer_leaves_no_visible_partial_object(void **state)
{
    fixture *f = *state;
    size_t len = 1 << 20;
    cleanup_free uint8_t *data = malloc(len);
    fill_pattern(data, len, 5);
    obi_digest full;
    obi_digest_of(data, len, &full);
    tree t;
    tree_build(&t);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(ready[0]);
        obi_blob_service *blobs = NULL;
        obi_directory_service *dirs = NULL;
        obi_blob_writer *w = NULL;
        obi_directory_putter *p = NULL;
        if (obi_local_blob_service_open(f->root, &blobs, NULL) < 0 ||
            obi_local_directory_service_open(f->root, &dirs, NULL) < 0 ||
            obi_blob_open_write(blobs, &w, NULL) < 0 ||
            obi_blob_write(w, data, len / 2, NULL) < 0 ||
            obi_directory_open_put(dirs, &p, NULL) < 0)
            _exit(1);
        for (int i = 0; i < 6; i++)
            if (obi_directory_put(p, t.dirs[i], NULL, NULL) < 0)
                _exit(1);
        if (write(ready[1], "r", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    f->child = pid;
    close(ready[1]);
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    f->child = 0;
    assert_true(WIFSIGNALED(status));

    assert_int_equal(count_in(f, "blobs"), 0);
    assert_int_equal(count_in(f, "tmp"), 1); /* the orphan */
    obi_digest half;
    obi_digest_of(data, len / 2, &half);
    assert_int_equal(obi_blob_has(f->blobs, &half, NULL), 0);
    assert_int_equal(obi_blob_has(f->blobs, &full, NULL), 0);
    for (int i = 0; i < 6; i++) {
        obi_directory *got = NULL;
        obi_error *err = NULL;
        assert_fails_with(err, obi_directory_get(f->dirs, &t.digests[i], &got, &err), -ENOENT,
                          "not found");
    }
    close_services(f);
    assert_int_equal(open_services(f), 0);
    assert_int_equal(count_in(f, "tmp"), 0);
    tree_free(&t);
}

/* ---- on-disk: pending blobs and the barrier ---- */

static int put_pending(obi_blob_service *svc, const void *data, size_t len, obi_digest *out,
                       obi_error **err)
{
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    int r = obi_blob_open_write(svc, &writer, err);
    if (r == 0)
        r = obi_blob_write(writer, data, len, err);
    if (r == 0)
        r = obi_blob_finish_pending(writer, out, err);
    return r;
}

static void test_store_local_pending_blob_readable_in_process_before_barrier(void **state)
{
    fixture *f = *state;
    obi_digest digest;
    assert_ok(put_pending(f->blobs, "pending", 7, &digest, err_ptr_));
    /* not under ROOT/blobs yet, but this process sees it, through every instance */
    assert_int_equal(count_in(f, "blobs"), 0);
    assert_int_equal(count_in(f, "tmp"), 1);
    assert_int_equal(obi_blob_has(f->blobs, &digest, NULL), 1);
    cleanup_blob_service obi_blob_service *second = NULL;
    assert_ok(obi_local_blob_service_open(f->root, &second, err_ptr_));
    assert_int_equal(obi_blob_has(second, &digest, NULL), 1);
    uint8_t *data = NULL;
    size_t len = 0;
    assert_ok(obi_blob_get_bytes(second, &digest, 100, &data, &len, err_ptr_));
    assert_int_equal(len, 7);
    assert_memory_equal(data, "pending", 7);
    free(data);
    /* the same content again is not pending twice */
    obi_digest again;
    assert_ok(put_pending(f->blobs, "pending", 7, &again, err_ptr_));
    assert_true(obi_digest_equal(&digest, &again));
    assert_int_equal(count_in(f, "tmp"), 1);
    /* local_path hands out the final name, so it makes the blob durable first */
    cleanup_free char *path = NULL;
    assert_ok(obi_blob_local_path(f->blobs, &digest, &path, err_ptr_));
    assert_non_null(strstr(path, "/blobs/"));
    assert_int_equal(access(path, R_OK), 0);
    assert_int_equal(count_in(f, "blobs"), 1);
    assert_int_equal(count_in(f, "tmp"), 0);
}

/* n pending blobs, one barrier: all under their names, intact after a reopen. Small batches
 * are fsynced file by file, large ones with syncfs. */
static void check_barrier_links_every_pending_blob(fixture *f, int n)
{
    obi_digest *digests = calloc((size_t)n, sizeof *digests);
    assert_non_null(digests);
    for (int i = 0; i < n; i++) {
        char content[16];
        int len = snprintf(content, sizeof content, "blob %d", i);
        assert_ok(put_pending(f->blobs, content, (size_t)len, &digests[i], err_ptr_));
    }
    assert_int_equal(count_in(f, "blobs"), 0);
    assert_int_equal(count_in(f, "tmp"), n);
    assert_ok(obi_blob_service_sync(f->blobs, err_ptr_));
    assert_int_equal(count_in(f, "blobs"), n);
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_ok(obi_blob_service_sync(f->blobs, err_ptr_)); /* nothing pending: nothing to do */
    close_services(f);
    assert_int_equal(open_services(f), 0);
    for (int i = 0; i < n; i++) {
        char content[16];
        int len = snprintf(content, sizeof content, "blob %d", i);
        uint8_t *data = NULL;
        size_t got = 0;
        assert_ok(obi_blob_get_bytes(f->blobs, &digests[i], 100, &data, &got, err_ptr_));
        assert_int_equal(got, (size_t)len);
        assert_memory_equal(data, content, got);
        free(data);
    }
    free(digests);
}

static void test_store_local_barrier_links_a_small_batch(void **state)
{
    check_barrier_links_every_pending_blob(*state, 5);
}

static void test_store_local_barrier_links_a_large_batch(void **state)
{
    check_barrier_links_every_pending_blob(*state, 300);
}

/* From 1024 pending blobs on, the barrier renames on several threads (one per CPU). */
static void test_store_local_barrier_links_a_batch_on_threads(void **state)
{
    check_barrier_links_every_pending_blob(*state, 1500);
}

/* A barrier whose renames fail for one fan-out directory (here: replaced by a file) names the
 * failure, keeps what it did not rename pending (still visible in the process), and the next
 * barrier, once the directory is back, publishes them. */
static void test_store_local_barrier_on_threads_keeps_what_it_could_not_rename_pending(void **state)
{
    fixture *f = *state;
    enum { N = 1500 };
    obi_digest digests[N];
    for (int i = 0; i < N; i++) {
        char content[16];
        int len = snprintf(content, sizeof content, "blob %d", i);
        assert_ok(put_pending(f->blobs, content, (size_t)len, &digests[i], err_ptr_));
    }
    unsigned byte = digests[N / 2].bytes[0];
    int in_byte = 0;
    for (int i = 0; i < N; i++)
        in_byte += digests[i].bytes[0] == byte;
    char fanout[16];
    snprintf(fanout, sizeof fanout, "blobs/%02x", byte);
    cleanup_free char *fanout_path = obi_path_join(f->root, fanout);
    assert_int_equal(rmdir(fanout_path), 0);
    int fd = open(fanout_path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    close(fd);
    obi_error *err = NULL;
    assert_fails_with(err, obi_blob_service_sync(f->blobs, &err), -ENOTDIR, fanout);
    /* the failing thread stops at its failure (as one thread would), the others finish */
    int left = count_in(f, "tmp");
    assert_true(left >= in_byte && left < N);
    for (int i = 0; i < N; i++)
        assert_int_equal(obi_blob_has(f->blobs, &digests[i], NULL), 1);
    assert_int_equal(unlink(fanout_path), 0);
    assert_int_equal(mkdir(fanout_path, 0755), 0);
    assert_ok(obi_blob_service_sync(f->blobs, err_ptr_));
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_int_equal(count_in(f, "blobs"), N);
}

/* Another writer (here a durable finish; in practice another process) stores the same contents
 * while ours is pending: the barrier's link finds the name taken, which is success. */
static void test_store_local_barrier_accepts_a_blob_stored_meanwhile(void **state)
{
    fixture *f = *state;
    obi_digest pending, stored;
    assert_ok(put_pending(f->blobs, "twice", 5, &pending, err_ptr_));
    assert_ok(obi_blob_put_bytes(f->blobs, "twice", 5, &stored, err_ptr_));
    assert_true(obi_digest_equal(&pending, &stored));
    assert_int_equal(count_in(f, "blobs"), 1);
    assert_int_equal(count_in(f, "tmp"), 1);
    assert_ok(obi_blob_service_sync(f->blobs, err_ptr_));
    assert_int_equal(count_in(f, "blobs"), 1);
    assert_int_equal(count_in(f, "tmp"), 0);
    uint8_t *data = NULL;
    size_t len = 0;
    assert_ok(obi_blob_get_bytes(f->blobs, &pending, 100, &data, &len, err_ptr_));
    assert_int_equal(len, 5);
    assert_memory_equal(data, "twice", 5);
    free(data);
}

static void test_store_local_service_free_is_a_barrier(void **state)
{
    fixture *f = *state;
    obi_digest digest;
    assert_ok(put_pending(f->blobs, "at exit", 7, &digest, err_ptr_));
    assert_int_equal(count_in(f, "blobs"), 0);
    close_services(f);
    assert_int_equal(count_in(f, "blobs"), 1);
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_int_equal(count_in(f, "owners"), 0); /* a clean exit leaves no lock file */
    assert_int_equal(open_services(f), 0);
    assert_int_equal(obi_blob_has(f->blobs, &digest, NULL), 1);
}

static void test_store_local_writer_outliving_its_service_still_works(void **state)
{
    fixture *f = *state;
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    assert_ok(obi_blob_open_write(f->blobs, &writer, err_ptr_));
    close_services(f);
    assert_ok(obi_blob_write(writer, "late", 4, err_ptr_));
    obi_digest digest;
    assert_ok(obi_blob_finish_pending(writer, &digest, err_ptr_));
    obi_blob_writer_close(writer); /* the last user of the store: runs the barrier */
    writer = NULL;
    assert_int_equal(count_in(f, "blobs"), 1);
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_int_equal(open_services(f), 0);
    assert_int_equal(obi_blob_has(f->blobs, &digest, NULL), 1);
}

static void test_store_local_directory_commit_makes_pending_blobs_durable_first(void **state)
{
    fixture *f = *state;
    obi_digest blob;
    assert_ok(put_pending(f->blobs, "referenced", 10, &blob, err_ptr_));
    cleanup_directory obi_directory *dir = obi_directory_new();
    cleanup_node obi_node file = {0};
    assert_int_equal(obi_node_init_file(&file, "f", 1, &blob, 10, false), 0);
    assert_int_equal(obi_directory_add(dir, &file), 0);
    cleanup_directory_putter obi_directory_putter *putter = NULL;
    assert_ok(obi_directory_open_put(f->dirs, &putter, err_ptr_));
    assert_ok(obi_directory_put(putter, dir, NULL, err_ptr_));
    assert_int_equal(count_in(f, "blobs"), 0);
    assert_ok(obi_directory_putter_finish(putter, NULL, err_ptr_));
    assert_int_equal(count_in(f, "blobs"), 1);
    assert_int_equal(count_in(f, "tmp"), 0);
}

/* Commits a directory holding one file node for blob (len bytes) through dirs. */
static void commit_directory_of(obi_directory_service *dirs, const obi_digest *blob, size_t len)
{
    cleanup_directory obi_directory *dir = obi_directory_new();
    cleanup_node obi_node file = {0};
    assert_int_equal(obi_node_init_file(&file, "f", 1, blob, len, false), 0);
    assert_int_equal(obi_directory_add(dir, &file), 0);
    cleanup_directory_putter obi_directory_putter *putter = NULL;
    assert_ok(obi_directory_open_put(dirs, &putter, err_ptr_));
    assert_ok(obi_directory_put(putter, dir, NULL, err_ptr_));
    assert_ok(obi_directory_putter_finish(putter, NULL, err_ptr_));
}

static void test_store_local_every_spelling_of_the_root_is_one_store(void **state)
{
    fixture *f = *state;
    /* The crash protocol links the blob and directory sides of a store (a commit runs the blob
     * side's barrier first) and the instances of one store in a process (one pending state).
     * They used to find each other by comparing ROOT as spelled: "/x/store/" and "/x/store" were
     * two stores, and a commit through one left the other's pending blobs unsynced. */
    cleanup_free char *link = obi_path_join(f->tmp, "link");
    assert_int_equal(symlink("store", link), 0);
    char *spellings[4];
    assert_true(asprintf(&spellings[0], "%s/", f->root) > 0);
    assert_true(asprintf(&spellings[1], "%s/../store", f->root) > 0);
    assert_true(asprintf(&spellings[2], "%s/./", f->root) > 0);
    spellings[3] = strdup(link);
    for (size_t i = 0; i < OBI_ARRAY_SIZE(spellings); i++) {
        cleanup_blob_service obi_blob_service *blobs = NULL;
        cleanup_directory_service obi_directory_service *dirs = NULL;
        assert_ok(obi_local_blob_service_open(spellings[i], &blobs, err_ptr_));
        assert_ok(obi_local_directory_service_open(spellings[i], &dirs, err_ptr_));
        /* a blob pending through one spelling is the other spelling's pending blob too */
        char content[32];
        int len = snprintf(content, sizeof content, "spelled %zu", i);
        obi_digest blob;
        assert_ok(put_pending(blobs, content, (size_t)len, &blob, err_ptr_));
        assert_int_equal(obi_blob_has(f->blobs, &blob, NULL), 1);
        int stored = count_in(f, "blobs");
        /* and a commit through the other spelling makes it durable first */
        commit_directory_of(f->dirs, &blob, (size_t)len);
        assert_int_equal(count_in(f, "blobs"), stored + 1);
        /* the same the other way round */
        len = snprintf(content, sizeof content, "plain %zu", i);
        assert_ok(put_pending(f->blobs, content, (size_t)len, &blob, err_ptr_));
        commit_directory_of(dirs, &blob, (size_t)len);
        assert_int_equal(count_in(f, "blobs"), stored + 2);
        assert_int_equal(count_in(f, "tmp"), 0);
        free(spellings[i]);
    }
}

static void test_store_local_ingest_leaves_nothing_pending(void **state)
{
    fixture *f = *state;
    cleanup_free char *src = obi_path_join(f->tmp, "src");
    assert_int_equal(mkdir(src, 0755), 0);
    for (int i = 0; i < 40; i++) {
        char name[32], content[32];
        snprintf(name, sizeof name, "src/file%d", i);
        int len = snprintf(content, sizeof content, "content %d", i);
        cleanup_free char *path = obi_path_join(f->tmp, name);
        assert_ok(obi_write_file(path, content, (size_t)len, 0644, err_ptr_));
    }
    cleanup_node obi_node root = {0};
    assert_ok(obi_ingest_path(f->blobs, f->dirs, src, NULL, &root, err_ptr_));
    assert_int_equal(count_in(f, "blobs"), 40);
    assert_int_equal(count_in(f, "tmp"), 0);
}

/* Runs child(root, ready_fd) in a fork that writes one byte to ready_fd when ready and then
 * waits to be killed; returns once it is ready, its pid in f->child (teardown kills it if the
 * test fails before kill_child). */
static void start_child(fixture *f, int (*child)(const char *root, int ready_fd))
{
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(ready[0]);
        if (child(f->root, ready[1]) < 0)
            _exit(1);
        for (;;)
            pause();
    }
    f->child = pid;
    close(ready[1]);
    char c = 0;
    ssize_t n = read(ready[0], &c, 1);
    close(ready[0]);
    assert_int_equal(n, 1);
}

static void kill_child(fixture *f)
{
    assert_int_equal(kill(f->child, SIGKILL), 0);
    int status = 0;
    assert_int_equal(waitpid(f->child, &status, 0), f->child);
    f->child = 0;
    assert_true(WIFSIGNALED(status));
}

static const char child_content[] = "finished but never synced";

static int child_finishes_pending(const char *root, int ready_fd)
{
    obi_blob_service *blobs = NULL;
    if (obi_local_blob_service_open(root, &blobs, NULL) < 0 ||
        put_pending(blobs, child_content, sizeof child_content, NULL, NULL) < 0)
        return -1;
    return write(ready_fd, "r", 1) == 1 ? 0 : -1;
}

static int child_finishes_pending_and_syncs(const char *root, int ready_fd)
{
    obi_blob_service *blobs = NULL;
    if (obi_local_blob_service_open(root, &blobs, NULL) < 0 ||
        put_pending(blobs, child_content, sizeof child_content, NULL, NULL) < 0 ||
        obi_blob_service_sync(blobs, NULL) < 0)
        return -1;
    return write(ready_fd, "r", 1) == 1 ? 0 : -1;
}

static void test_store_local_killed_before_barrier_leaves_nothing_visible(void **state)
{
    fixture *f = *state;
    start_child(f, child_finishes_pending);
    kill_child(f);
    assert_int_equal(count_in(f, "blobs"), 0);
    assert_int_equal(count_in(f, "tmp"), 1);    /* the dead owner's temporary file */
    assert_int_equal(count_in(f, "owners"), 1); /* its lock, free now (ours: no writer yet) */
    obi_digest digest;
    obi_digest_of(child_content, sizeof child_content, &digest);
    assert_int_equal(obi_blob_has(f->blobs, &digest, NULL), 0);
    close_services(f);
    assert_int_equal(open_services(f), 0); /* removes both */
    assert_int_equal(obi_blob_has(f->blobs, &digest, NULL), 0);
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_int_equal(count_in(f, "owners"), 0);
}

static void test_store_local_killed_after_barrier_leaves_blob_visible_and_intact(void **state)
{
    fixture *f = *state;
    start_child(f, child_finishes_pending_and_syncs);
    kill_child(f);
    assert_int_equal(count_in(f, "blobs"), 1);
    assert_int_equal(count_in(f, "tmp"), 0);
    obi_digest digest;
    obi_digest_of(child_content, sizeof child_content, &digest);
    uint8_t *data = NULL;
    size_t len = 0;
    assert_ok(obi_blob_get_bytes(f->blobs, &digest, 100, &data, &len, err_ptr_));
    assert_int_equal(len, sizeof child_content);
    assert_memory_equal(data, child_content, len);
    free(data);
    close_services(f);
    assert_int_equal(open_services(f), 0);
    assert_int_equal(count_in(f, "owners"), 0); /* the dead child's lock removed */
}

static void test_store_local_live_owner_temps_kept_dead_owner_temps_removed(void **state)
{
    fixture *f = *state;
    /* a live owner in another process, holding a pending blob */
    start_child(f, child_finishes_pending);
    assert_int_equal(count_in(f, "tmp"), 1);
    /* a dead owner of an earlier run: a free lock file and its temporary file */
    const char *token = "0123456789abcdef0123456789abcdef";
    char name[128];
    snprintf(name, sizeof name, "owners/%s.lock", token);
    cleanup_free char *dead_lock = obi_path_join(f->root, name);
    assert_ok(obi_write_file(dead_lock, "", 0, 0600, err_ptr_));
    snprintf(name, sizeof name, "tmp/%s.7", token);
    cleanup_free char *dead_temp = obi_path_join(f->root, name);
    assert_ok(obi_write_file(dead_temp, "dead", 4, 0600, err_ptr_));
    /* a temporary file whose owner lock is already gone */
    cleanup_free char *lockless = obi_path_join(f->root, "tmp/fedcba9876543210fedcba9876543210.0");
    assert_ok(obi_write_file(lockless, "gone", 4, 0600, err_ptr_));
    /* a file that is not ours at all is left alone */
    cleanup_free char *foreign = obi_path_join(f->root, "tmp/unrelated");
    assert_ok(obi_write_file(foreign, "keep", 4, 0600, err_ptr_));
    assert_int_equal(count_in(f, "tmp"), 4);

    /* a new start removes only the dead ones */
    cleanup_blob_service obi_blob_service *second = NULL;
    assert_ok(obi_local_blob_service_open(f->root, &second, err_ptr_));
    assert_int_equal(count_in(f, "tmp"), 2); /* the live child's and the foreign file */
    assert_int_equal(access(dead_temp, F_OK), -1);
    assert_int_equal(access(lockless, F_OK), -1);
    assert_int_equal(access(dead_lock, F_OK), -1);
    assert_int_equal(access(foreign, F_OK), 0);
    assert_int_equal(count_in(f, "owners"), 1); /* the live child's */

    /* once the child is dead, the next start removes its pending blob and its lock */
    kill_child(f);
    obi_blob_service_free(second);
    second = NULL;
    close_services(f);
    assert_int_equal(open_services(f), 0);
    assert_int_equal(count_in(f, "tmp"), 1);
    assert_int_equal(count_in(f, "owners"), 0);
    assert_int_equal(count_in(f, "blobs"), 0);
}

/* Only writers need an owner lock: opening, reading and has() create no file in owners/ (a
 * rebuild whose outputs are all stored touches nothing); the first writer makes it. */
static void test_store_local_owner_lock_made_by_the_first_writer(void **state)
{
    fixture *f = *state;
    obi_digest digest;
    obi_digest_of("x", 1, &digest);
    assert_int_equal(obi_blob_has(f->blobs, &digest, NULL), 0);
    assert_int_equal(count_in(f, "owners"), 0);
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    assert_ok(obi_blob_open_write(f->blobs, &writer, err_ptr_));
    assert_int_equal(count_in(f, "owners"), 1);
    assert_ok(obi_blob_write(writer, "x", 1, err_ptr_));
    assert_ok(obi_blob_finish(writer, &digest, err_ptr_));
    obi_blob_writer_close(steal_pointer(&writer));
    close_services(f);
    assert_int_equal(count_in(f, "owners"), 0); /* removed at the last close */
    assert_int_equal(open_services(f), 0);
}

/* ---- the publish path: temporary files beside their names ---- */

static int put_expecting(obi_blob_service *svc, const void *data, size_t len, bool pending,
                         obi_error **err)
{
    obi_digest expected, got;
    obi_digest_of(data, len, &expected);
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    int r = obi_blob_open_write_expecting(svc, &expected, &writer, err);
    if (r == 0)
        r = obi_blob_write(writer, data, len, err);
    if (r == 0)
        r = pending ? obi_blob_finish_pending(writer, &got, err)
                    : obi_blob_finish(writer, &got, err);
    return r == 0 && !obi_digest_equal(&got, &expected) ? -EIO : r;
}

/* Names of entries in the blob's fan-out directory that start with a dot (temporary files). */
static int count_fanout_temps(const fixture *f, const obi_digest *digest)
{
    char hex[OBI_DIGEST_HEX_LEN + 1], sub[16];
    obi_digest_to_hex(digest, hex);
    snprintf(sub, sizeof sub, "blobs/%.2s", hex);
    cleanup_free char *path = obi_path_join(f->root, sub);
    cleanup_dir DIR *dir = opendir(path);
    int n = 0;
    struct dirent *e;
    while (dir && (e = readdir(dir)))
        n += e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    return n;
}

static int count_visit(const obi_digest *digest, void *ctx, obi_error **err)
{
    (void)digest;
    (void)err;
    (*(int *)ctx)++;
    return 0;
}

static int count_listed(obi_blob_service *svc)
{
    int n = 0;
    return obi_blob_service_list(svc, count_visit, &n, NULL) < 0 ? -1 : n;
}

static void test_store_local_new_store_has_every_fanout_directory(void **state)
{
    fixture *f = *state;
    for (unsigned byte = 0; byte < 256; byte++) {
        char sub[16];
        snprintf(sub, sizeof sub, "blobs/%02x", byte);
        cleanup_free char *path = obi_path_join(f->root, sub);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
    }
}

/* A writer told the digest prepares the blob in its fan-out directory under a name that is not
 * a blob's: not listed, not found by has() from elsewhere, visible here while pending, renamed
 * to its name by the barrier. */
static void test_store_local_expected_blob_prepared_beside_its_name(void **state)
{
    fixture *f = *state;
    static const char data[] = "prepared beside its name";
    obi_digest digest;
    obi_digest_of(data, sizeof data, &digest);
    assert_ok(put_expecting(f->blobs, data, sizeof data, true, err_ptr_));
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_int_equal(count_fanout_temps(f, &digest), 1);
    assert_int_equal(count_listed(f->blobs), 0);
    assert_int_equal(obi_blob_has(f->blobs, &digest, NULL), 1);
    uint8_t *got = NULL;
    size_t len = 0;
    assert_ok(obi_blob_get_bytes(f->blobs, &digest, 100, &got, &len, err_ptr_));
    assert_memory_equal(got, data, sizeof data);
    free(got);
    assert_ok(obi_blob_service_sync(f->blobs, err_ptr_));
    assert_int_equal(count_fanout_temps(f, &digest), 0);
    assert_int_equal(count_listed(f->blobs), 1);
    /* finish (durable at once) goes the same way, and a second copy leaves no file behind */
    assert_ok(put_expecting(f->blobs, data, sizeof data, false, err_ptr_));
    assert_ok(put_expecting(f->blobs, "other", 5, false, err_ptr_));
    assert_int_equal(count_in(f, "blobs"), 2);
    assert_int_equal(count_in(f, "tmp"), 0);
}

/* The contents decide the name, not what the writer was told: a writer told the wrong digest
 * stores the blob under the right one (ingest reports the mismatch). */
static void test_store_local_expected_digest_is_only_a_hint(void **state)
{
    fixture *f = *state;
    obi_digest wrong, right, got;
    obi_digest_of("something else", 14, &wrong);
    obi_digest_of("written", 7, &right);
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    assert_ok(obi_blob_open_write_expecting(f->blobs, &wrong, &writer, err_ptr_));
    assert_ok(obi_blob_write(writer, "written", 7, err_ptr_));
    assert_ok(obi_blob_finish_pending(writer, &got, err_ptr_));
    assert_true(obi_digest_equal(&got, &right));
    assert_ok(obi_blob_service_sync(f->blobs, err_ptr_));
    assert_int_equal(obi_blob_has(f->blobs, &right, NULL), 1);
    assert_int_equal(obi_blob_has(f->blobs, &wrong, NULL), 0);
    assert_int_equal(count_fanout_temps(f, &wrong), 0);
    assert_int_equal(count_in(f, "blobs"), 1);
}

#define N_IMPORTERS 4
static const char shared_content[] = "the same blob, from every importer at once";

/* Processes storing the same blob at once through the rename path: every one succeeds, one
 * file holds it, intact, and no temporary file is left. */
static void test_store_local_concurrent_importers_of_one_blob_leave_one(void **state)
{
    fixture *f = *state;
    pid_t pids[N_IMPORTERS];
    int go[2];
    assert_int_equal(pipe(go), 0);
    for (int i = 0; i < N_IMPORTERS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(go[1]);
            char c;
            obi_blob_service *blobs = NULL;
            int ok =
                obi_local_blob_service_open(f->root, &blobs, NULL) == 0 &&
                read(go[0], &c, 1) == 0 && /* all start together at EOF */
                put_expecting(blobs, shared_content, sizeof shared_content, i % 2, NULL) == 0 &&
                obi_blob_service_sync(blobs, NULL) == 0;
            obi_blob_service_free(blobs);
            _exit(ok ? 0 : 1);
        }
    }
    close(go[0]);
    close(go[1]);
    for (int i = 0; i < N_IMPORTERS; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    obi_digest digest;
    obi_digest_of(shared_content, sizeof shared_content, &digest);
    assert_int_equal(count_in(f, "blobs"), 1);
    assert_int_equal(count_fanout_temps(f, &digest), 0);
    assert_int_equal(count_in(f, "owners"), 0);
    uint8_t *got = NULL;
    size_t len = 0;
    assert_ok(obi_blob_get_bytes(f->blobs, &digest, 100, &got, &len, err_ptr_));
    assert_int_equal(len, sizeof shared_content);
    assert_memory_equal(got, shared_content, len);
    free(got);
}

static int child_finishes_expected_pending(const char *root, int ready_fd)
{
    obi_blob_service *blobs = NULL;
    if (obi_local_blob_service_open(root, &blobs, NULL) < 0 ||
        put_expecting(blobs, child_content, sizeof child_content, true, NULL) < 0)
        return -1;
    return write(ready_fd, "r", 1) == 1 ? 0 : -1;
}

/* A writer killed with its blob prepared in the fan-out directory: the file is never a blob
 * (not listed, has() says no, the store checks clean), kept while its owner lives, removed by
 * the next start once it is dead. */
static void test_store_local_killed_writer_fanout_temp_never_visible_and_swept(void **state)
{
    fixture *f = *state;
    obi_digest digest;
    obi_digest_of(child_content, sizeof child_content, &digest);
    start_child(f, child_finishes_expected_pending);
    /* alive: another process's start keeps it */
    cleanup_blob_service obi_blob_service *second = NULL;
    assert_ok(obi_local_blob_service_open(f->root, &second, err_ptr_));
    assert_int_equal(count_fanout_temps(f, &digest), 1);
    obi_blob_service_free(steal_pointer(&second));
    /* the store check sees no blob and no fault while the file is there */
    obi_store store = {.blobs = f->blobs, .directories = f->dirs};
    obi_store_verify_stats stats = {0};
    assert_ok(obi_store_verify(&store, NULL, NULL, &stats, err_ptr_));
    assert_int_equal(stats.blobs, 0);
    assert_int_equal(stats.faults, 0);
    assert_int_equal(count_fanout_temps(f, &digest), 1);
    kill_child(f);
    assert_int_equal(count_fanout_temps(f, &digest), 1);
    assert_int_equal(count_listed(f->blobs), 0);
    assert_int_equal(obi_blob_has(f->blobs, &digest, NULL), 0);
    close_services(f);
    assert_int_equal(open_services(f), 0); /* the sweep */
    assert_int_equal(count_fanout_temps(f, &digest), 0);
    assert_int_equal(count_in(f, "blobs"), 0);
    assert_int_equal(count_in(f, "owners"), 0);
}

/* A dead owner whose lock file lost its bitmap (a crash of the machine, or an older version)
 * has its temporary files looked for in every fan-out directory; others' are left. */
static void test_store_local_dead_owner_without_bitmap_swept_everywhere(void **state)
{
    fixture *f = *state;
    const char *token = "0123456789abcdef0123456789abcdef";
    char name[128];
    snprintf(name, sizeof name, "owners/%s.lock", token);
    cleanup_free char *lock = obi_path_join(f->root, name);
    assert_ok(obi_write_file(lock, "", 0, 0600, err_ptr_));
    snprintf(name, sizeof name, "blobs/7f/.%s.3", token);
    cleanup_free char *dead = obi_path_join(f->root, name);
    assert_ok(obi_write_file(dead, "dead", 4, 0444, err_ptr_));
    /* a file of a token with no lock file at all is not judged: kept (never a blob either) */
    cleanup_free char *other = obi_path_join(f->root, "blobs/7f/.fedcba9876543210fedcba98765432.1");
    assert_ok(obi_write_file(other, "other", 5, 0444, err_ptr_));
    close_services(f);
    assert_int_equal(open_services(f), 0);
    assert_int_equal(access(dead, F_OK), -1);
    assert_int_equal(access(lock, F_OK), -1);
    assert_int_equal(access(other, F_OK), 0);
    assert_int_equal(count_listed(f->blobs), 0);
}

/* Importing a tree the store has writes nothing: no writer, so no owner lock and no temporary
 * file, and the blob files are the same inodes as before (small and large files alike). */
static void test_store_local_reimport_writes_nothing(void **state)
{
    fixture *f = *state;
    cleanup_free char *src = obi_path_join(f->tmp, "src");
    assert_int_equal(mkdir(src, 0755), 0);
    size_t sizes[] = {10, 64 << 10, (64 << 10) + 1, 3 << 20};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(sizes); i++) {
        cleanup_free uint8_t *data = malloc(sizes[i]);
        fill_pattern(data, sizes[i], (unsigned)i);
        char name[32];
        snprintf(name, sizeof name, "src/f%zu", i);
        cleanup_free char *path = obi_path_join(f->tmp, name);
        assert_ok(obi_write_file(path, data, sizes[i], 0644, err_ptr_));
    }
    cleanup_node obi_node first = {0}, second = {0};
    assert_ok(obi_ingest_path(f->blobs, f->dirs, src, NULL, &first, err_ptr_));
    assert_int_equal(count_in(f, "blobs"), 4);
    close_services(f); /* the owner lock goes with the last service */
    assert_int_equal(count_in(f, "owners"), 0);
    assert_int_equal(open_services(f), 0);
    assert_ok(obi_ingest_path(f->blobs, f->dirs, src, NULL, &second, err_ptr_));
    assert_true(obi_digest_equal(&first.digest, &second.digest));
    assert_int_equal(count_in(f, "owners"), 0); /* no writer was opened */
    assert_int_equal(count_in(f, "blobs"), 4);
    assert_int_equal(count_in(f, "tmp"), 0);
}

/* ---- selection by URL ---- */

static void test_store_url_memory_and_objectstore_file_open(void **state)
{
    (void)state;
    cleanup_blob_service obi_blob_service *mem = NULL;
    assert_ok(obi_blob_service_open("memory://", &mem, err_ptr_));
    obi_digest d;
    assert_ok(obi_blob_put_bytes(mem, "m", 1, &d, err_ptr_));
    cleanup_free char *none = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_blob_local_path(mem, &d, &none, &err), -ENOTSUP, "no local files");
    assert_null(none);

    char *tmp = obi_test_tmpdir();
    cleanup_free char *url = NULL;
    assert_true(asprintf(&url, "objectstore+file://%s/s", tmp) > 0);
    cleanup_blob_service obi_blob_service *blobs = NULL;
    cleanup_directory_service obi_directory_service *dirs = NULL;
    assert_ok(obi_blob_service_open(url, &blobs, err_ptr_));
    assert_ok(obi_directory_service_open(url, &dirs, err_ptr_));
    cleanup_free char *db = obi_path_join(tmp, "s/directories.sqlite");
    cleanup_free char *blob_dir = obi_path_join(tmp, "s/blobs");
    assert_int_not_equal(access(db, F_OK), 0); /* the database is opened on first use */
    int listed = 0;
    assert_ok(obi_directory_service_list(dirs, count_visit, &listed, err_ptr_));
    assert_int_equal(listed, 0);
    assert_int_equal(access(db, F_OK), 0);
    assert_int_equal(access(blob_dir, F_OK), 0);
    obi_test_tmpdir_remove(tmp);
}

/* The directory database is opened on first use: a database that cannot be opened is the
 * error of that use (naming the file), of obi_store_connect as of a get, and is tried again on
 * the next, which works once the obstacle is gone. */
static void test_store_local_directory_database_opens_on_first_use(void **state)
{
    (void)state;
    char *tmp = obi_test_tmpdir();
    cleanup_free char *db = obi_path_join(tmp, "directories.sqlite");
    assert_int_equal(mkdir(db, 0700), 0); /* a directory where the database should be */
    cleanup_store obi_store *store = NULL;
    assert_ok(obi_store_open(tmp, tmp, &store, err_ptr_));
    obi_error *err = NULL;
    assert_fails_with(err, obi_store_connect(store, &err), -EIO, "directories.sqlite");
    obi_digest absent = {{0}};
    cleanup_directory obi_directory *dir = NULL;
    assert_fails_with(err, obi_directory_get(store->directories, &absent, &dir, &err), -EIO,
                      "local directory service");
    assert_int_equal(rmdir(db), 0);
    assert_fails_with(err, obi_directory_get(store->directories, &absent, &dir, &err), -ENOENT,
                      "not found");
    assert_ok(obi_store_connect(store, err_ptr_));
    assert_int_equal(access(db, F_OK), 0);
    obi_test_tmpdir_remove(tmp);
}

static void test_store_url_relative_path_is_made_absolute(void **state)
{
    (void)state;
    char *tmp = obi_test_tmpdir();
    cleanup_free char *old = getcwd(NULL, 0);
    assert_int_equal(chdir(tmp), 0);
    obi_store *store = NULL;
    int r = 0;
    obi_error *err = NULL;
    r = obi_store_open("rel/store", "rel/store", &store, &err);
    assert_int_equal(chdir(old), 0);
    if (r < 0)
        print_error("%s\n", err->message);
    obi_error_free(err);
    assert_int_equal(r, 0);
    /* still usable after the cwd changed: the root was made absolute */
    obi_digest d;
    assert_ok(obi_blob_put_bytes(store->blobs, "r", 1, &d, err_ptr_));
    cleanup_free char *path = NULL;
    assert_ok(obi_blob_local_path(store->blobs, &d, &path, err_ptr_));
    assert_true(path[0] == '/');
    assert_non_null(strstr(path, "/rel/store/blobs/"));
    obi_store_close(store);
    obi_test_tmpdir_remove(tmp);
}

static void test_store_url_unknown_scheme_lists_supported(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_blob_service *b = NULL;
    obi_directory_service *d = NULL;
    static const char *needles[] = {"unsupported scheme 'nosuch://'", "memory://",
                                    "objectstore+file:///ABS/DIR", "a plain path"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(needles); i++) {
        assert_fails_with(err, obi_blob_service_open("nosuch://x", &b, &err), -EINVAL, needles[i]);
        assert_fails_with(err, obi_directory_service_open("nosuch://x", &d, &err), -EINVAL,
                          needles[i]);
    }
    assert_null(b);
    assert_null(d);
}

static void test_store_url_malformed_rejected(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_blob_service *b = NULL;
    obi_directory_service *d = NULL;
    assert_fails_with(err, obi_blob_service_open("objectstore+file://relative/dir", &b, &err),
                      -EINVAL, "needs an absolute path");
    assert_fails_with(err, obi_blob_service_open("objectstore+file://", &b, &err), -EINVAL,
                      "needs an absolute path");
    assert_fails_with(err, obi_directory_service_open("objectstore+file://", &d, &err), -EINVAL,
                      "needs an absolute path");
    assert_fails_with(err, obi_blob_service_open("memory://?x=1", &b, &err), -EINVAL,
                      "takes no parameters");
    assert_fails_with(err, obi_blob_service_open("memory://host", &b, &err), -EINVAL,
                      "no host or path");
    assert_fails_with(err, obi_blob_service_open("objectstore+file:///a%zz", &b, &err), -EINVAL,
                      "byte offset");
    assert_fails_with(err, obi_blob_service_open("", &b, &err), -EINVAL, "empty");
    /* malformed URLs also say what is supported */
    assert_fails_with(err, obi_blob_service_open("objectstore+file://", &b, &err), -EINVAL,
                      "(supported: memory://, objectstore+file:///ABS/DIR, a plain path");
    assert_fails_with(err, obi_directory_service_open("memory://?a=%zz", &d, &err), -EINVAL,
                      "(supported: memory://");
    assert_null(b);
    assert_null(d);
}

static int fake_calls;

static int fake_blobs(const obi_url *url, obi_blob_service **out, obi_error **err)
{
    fake_calls++;
    if (strcmp(url->host, "h") != 0 || !url->port || strcmp(url->port, "1") != 0)
        return obi_error_set(err, -EINVAL, "fake: unexpected URL");
    return obi_memory_blob_service_new(out, err);
}

static void test_store_url_registered_scheme_is_used_and_listed(void **state)
{
    (void)state;
    assert_int_equal(obi_store_register_scheme("memory", fake_blobs, NULL), -EEXIST);
    assert_int_equal(obi_store_register_scheme("test+fake", fake_blobs, NULL), 0);
    cleanup_blob_service obi_blob_service *b = NULL;
    fake_calls = 0;
    assert_ok(obi_blob_service_open("test+fake://h:1", &b, err_ptr_));
    assert_int_equal(fake_calls, 1);
    obi_error *err = NULL;
    obi_directory_service *d = NULL;
    assert_fails_with(err, obi_directory_service_open("test+fake://h:1", &d, &err), -EINVAL,
                      "has no directory service");
    obi_blob_service *none = NULL;
    assert_fails_with(err, obi_blob_service_open("other://", &none, &err), -EINVAL, "test+fake://");
}

static void test_store_default_url_from_environment(void **state)
{
    (void)state;
    char *tmp = obi_test_tmpdir();
    cleanup_free char *saved_store =
        getenv("OCIBUILD_STORE") ? strdup(getenv("OCIBUILD_STORE")) : NULL;
    cleanup_free char *saved_data =
        getenv("OCIBUILD_DATA_DIR") ? strdup(getenv("OCIBUILD_DATA_DIR")) : NULL;
    setenv("OCIBUILD_STORE", "memory://", 1);
    cleanup_free char *a = obi_default_store_url();
    assert_string_equal(a, "memory://");
    unsetenv("OCIBUILD_STORE");
    setenv("OCIBUILD_DATA_DIR", tmp, 1);
    cleanup_free char *b = obi_default_store_url();
    cleanup_free char *expected = obi_path_join(tmp, "store");
    assert_string_equal(b, expected);
    /* obi_store_open(NULL, NULL) opens the default */
    obi_store *store = NULL;
    assert_ok(obi_store_open(NULL, NULL, &store, err_ptr_));
    assert_ok(obi_store_connect(store, err_ptr_));
    cleanup_free char *db = obi_path_join(expected, "directories.sqlite");
    assert_int_equal(access(db, F_OK), 0);
    obi_store_close(store);
    if (saved_store)
        setenv("OCIBUILD_STORE", saved_store, 1);
    if (saved_data)
        setenv("OCIBUILD_DATA_DIR", saved_data, 1);
    else
        unsetenv("OCIBUILD_DATA_DIR");
    obi_test_tmpdir_remove(tmp);
}

#define BOTH(test)                                                                                 \
    cmocka_unit_test_prestate_setup_teardown(test, setup, teardown, &memory_kind),                 \
        cmocka_unit_test_prestate_setup_teardown(test, setup, teardown, &local_kind)
#define LOCAL(test) cmocka_unit_test_prestate_setup_teardown(test, setup, teardown, &local_kind)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_store_blob_put_get_round_trip),
        BOTH(test_store_blob_streamed_in_pieces_equals_whole),
        BOTH(test_store_blob_has_reports_presence),
        BOTH(test_store_blob_absent_is_enoent_naming_digest),
        BOTH(test_store_blob_get_bytes_refuses_oversized),
        BOTH(test_store_blob_writer_closed_without_finish_leaves_nothing),
        BOTH(test_store_directory_children_first_accepted_and_root_returned),
        BOTH(test_store_directory_empty_directory_round_trip),
        BOTH(test_store_directory_putting_twice_is_idempotent),
        BOTH(test_store_directory_child_from_earlier_putter_is_accepted),
        BOTH(test_store_directory_missing_child_refused_naming_it),
        BOTH(test_store_directory_unreachable_directory_refused_naming_it),
        BOTH(test_store_directory_deeper_than_the_limit_refused),
        BOTH(test_store_directory_depth_counts_stored_children),
        BOTH(test_store_directory_child_with_wrong_size_refused),
        BOTH(test_store_directory_invalid_directory_refused),
        BOTH(test_store_directory_abort_leaves_nothing),
        BOTH(test_store_directory_recursive_root_first_breadth_first_each_once),
        BOTH(test_store_directory_recursive_stops_on_visitor_error),
        BOTH(test_store_directory_recursive_absent_root_is_enoent),
        BOTH(test_store_directory_put_encoded_keeps_canonical_bytes),
        BOTH(test_store_directory_put_encoded_refuses_like_put),
        BOTH(test_store_directory_put_encoded_reencodes_small_other_forms_only),
        BOTH(test_store_directory_walk_yields_what_get_recursive_visits),
        BOTH(test_store_eight_threads_writing_same_objects_leave_one_intact),
        LOCAL(test_store_eight_instances_writing_same_objects_leave_one_intact),
        LOCAL(test_store_local_blob_is_read_only_file_named_by_digest),
        LOCAL(test_store_local_corrupted_blob_file_detected),
        LOCAL(test_store_local_corrupted_sqlite_row_detected),
        LOCAL(test_store_local_reopen_sees_committed_objects),
        LOCAL(test_store_local_orphan_removed_but_live_writer_kept),
        LOCAL(test_store_local_killed_writer_leaves_no_visible_partial_object),
        LOCAL(test_store_local_pending_blob_readable_in_process_before_barrier),
        LOCAL(test_store_local_barrier_links_a_small_batch),
        LOCAL(test_store_local_barrier_links_a_large_batch),
        LOCAL(test_store_local_barrier_links_a_batch_on_threads),
        LOCAL(test_store_local_barrier_on_threads_keeps_what_it_could_not_rename_pending),
        LOCAL(test_store_local_barrier_accepts_a_blob_stored_meanwhile),
        LOCAL(test_store_local_service_free_is_a_barrier),
        LOCAL(test_store_local_every_spelling_of_the_root_is_one_store),
        LOCAL(test_store_local_writer_outliving_its_service_still_works),
        LOCAL(test_store_local_directory_commit_makes_pending_blobs_durable_first),
        LOCAL(test_store_local_ingest_leaves_nothing_pending),
        LOCAL(test_store_local_killed_before_barrier_leaves_nothing_visible),
        LOCAL(test_store_local_killed_after_barrier_leaves_blob_visible_and_intact),
        LOCAL(test_store_local_live_owner_temps_kept_dead_owner_temps_removed),
        LOCAL(test_store_local_owner_lock_made_by_the_first_writer),
        LOCAL(test_store_local_new_store_has_every_fanout_directory),
        LOCAL(test_store_local_expected_blob_prepared_beside_its_name),
        LOCAL(test_store_local_expected_digest_is_only_a_hint),
        LOCAL(test_store_local_concurrent_importers_of_one_blob_leave_one),
        LOCAL(test_store_local_killed_writer_fanout_temp_never_visible_and_swept),
        LOCAL(test_store_local_dead_owner_without_bitmap_swept_everywhere),
        LOCAL(test_store_local_reimport_writes_nothing),
        cmocka_unit_test(test_store_url_memory_and_objectstore_file_open),
        cmocka_unit_test(test_store_local_directory_database_opens_on_first_use),
        cmocka_unit_test(test_store_url_relative_path_is_made_absolute),
        cmocka_unit_test(test_store_url_unknown_scheme_lists_supported),
        cmocka_unit_test(test_store_url_malformed_rejected),
        cmocka_unit_test(test_store_url_registered_scheme_is_used_and_listed),
        cmocka_unit_test(test_store_default_url_from_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
