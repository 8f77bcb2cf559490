/*
 * Unit tests for ingest (src/castore/ingest.c) against the memory store: node kinds, the
 * executable bit, names, symlinks never followed, special files refused with no directory
 * committed, the reference scanner fed contents and targets (not names), deep trees; and
 * against the on-disk store, files ingested on several threads (the same tree as on one, the
 * first failure in walk order reported), and files adopted instead of copied (as root: the
 * blob is the file itself, 0444 and the store owner's; a second link, a writer still open,
 * xattrs or another filesystem make a copy; a kill before the barrier leaves no blob).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "ocibuild/blake3.h"
#include "ocibuild/fs.h"
#include "ocibuild/ingest.h"
#include "ocibuild/store_backend.h"
#include "test_helpers.h"

typedef obi_test_store_fixture fixture;

static void make_dir(fixture *f, const char *rel)
{
    cleanup_free char *p = obi_test_path_in(f, rel);
    assert_ok(obi_mkdir_p(p, 0755, err_ptr_));
}

static void ingest(fixture *f, const char *rel, const obi_ingest_options *opts, obi_node *out)
{
    cleanup_free char *p = obi_test_path_in(f, rel);
    assert_ok(obi_ingest_path(f->blobs, f->dirs, p, opts, out, err_ptr_));
}

static void test_ingest_file_is_a_blob_with_its_size(void **state)
{
    fixture *f = *state;
    obi_test_write_text(f, "hello", "hello\n", 0644);
    cleanup_node obi_node node = {0};
    ingest(f, "hello", NULL, &node);
    assert_int_equal(node.kind, OBI_NODE_FILE);
    assert_string_equal((char *)node.name.data, "hello");
    assert_int_equal(node.size, 6);
    assert_false(node.executable);
    obi_digest expected;
    obi_digest_of("hello\n", 6, &expected);
    assert_true(obi_digest_equal(&node.digest, &expected));
    cleanup_free uint8_t *data = NULL;
    size_t len = 0;
    assert_ok(obi_blob_get_bytes(f->blobs, &node.digest, 100, &data, &len, err_ptr_));
    assert_int_equal(len, 6);
    assert_memory_equal(data, "hello\n", 6);
}

static void test_ingest_executable_iff_owner_execute_bit(void **state)
{
    fixture *f = *state;
    obi_test_write_text(f, "owner", "x", 0700);
    obi_test_write_text(f, "group", "x", 0654);
    obi_test_write_text(f, "other", "x", 0645);
    cleanup_node obi_node a = {0}, b = {0}, c = {0};
    ingest(f, "owner", NULL, &a);
    ingest(f, "group", NULL, &b);
    ingest(f, "other", NULL, &c);
    assert_true(a.executable);
    assert_false(b.executable);
    assert_false(c.executable);
}

static void test_ingest_directory_sorted_bytewise_with_recursive_size(void **state)
{
    fixture *f = *state;
    make_dir(f, "d/sub");
    obi_test_write_text(f, "d/b", "b", 0644);
    obi_test_write_text(f, "d/B", "B", 0644);
    obi_test_write_text(f, "d/sub/x", "x", 0644);
    cleanup_free char *link = obi_test_path_in(f, "d/a-link");
    assert_int_equal(symlink("b", link), 0);
    cleanup_node obi_node node = {0};
    ingest(f, "d", NULL, &node);
    assert_int_equal(node.kind, OBI_NODE_DIRECTORY);
    assert_int_equal(node.size, 5); /* sub, B, b, a-link + sub's x */
    cleanup_directory obi_directory *dir = NULL;
    assert_ok(obi_directory_get(f->dirs, &node.digest, &dir, err_ptr_));
    assert_int_equal(dir->n_files, 2);
    assert_string_equal((char *)dir->files[0].name.data, "B");
    assert_string_equal((char *)dir->files[1].name.data, "b");
    assert_int_equal(dir->n_symlinks, 1);
    assert_string_equal((char *)dir->symlinks[0].target.data, "b");
    assert_int_equal(dir->n_directories, 1);
    assert_int_equal(dir->directories[0].size, 1);
}

static void test_ingest_root_symlink_is_not_followed_even_with_trailing_slash(void **state)
{
    fixture *f = *state;
    make_dir(f, "target");
    cleanup_free char *link = obi_test_path_in(f, "link");
    assert_int_equal(symlink("target", link), 0);
    cleanup_node obi_node node = {0};
    ingest(f, "link/", NULL, &node);
    assert_int_equal(node.kind, OBI_NODE_SYMLINK);
    assert_string_equal((char *)node.name.data, "link");
    assert_string_equal((char *)node.target.data, "target");
}

static void test_ingest_uses_the_name_override(void **state)
{
    fixture *f = *state;
    obi_test_write_text(f, "file", "x", 0644);
    cleanup_node obi_node node = {0};
    obi_ingest_options opts = {.name = "other"};
    ingest(f, "file", &opts, &node);
    assert_string_equal((char *)node.name.data, "other");
}

static void test_ingest_rejects_an_invalid_name_override(void **state)
{
    fixture *f = *state;
    obi_test_write_text(f, "file", "x", 0644);
    cleanup_free char *p = obi_test_path_in(f, "file");
    obi_node node = {0};
    obi_error *err = NULL;
    obi_ingest_options opts = {.name = "a/b"};
    assert_fails_with(err, obi_ingest_path(f->blobs, f->dirs, p, &opts, &node, &err), -EINVAL,
                      "root node name");
}

static void test_ingest_names_dot_after_the_real_directory(void **state)
{
    fixture *f = *state;
    make_dir(f, "here");
    cleanup_free char *dot = obi_test_path_in(f, "here/.");
    cleanup_node obi_node node = {0};
    assert_ok(obi_ingest_path(f->blobs, f->dirs, dot, NULL, &node, err_ptr_));
    assert_string_equal((char *)node.name.data, "here");
}

static void test_ingest_refuses_fifo_naming_it_and_commits_no_directory(void **state)
{
    fixture *f = *state;
    make_dir(f, "t/a-sub");
    make_dir(f, "t/z");
    obi_test_write_text(f, "t/a-sub/file", "content", 0644);
    cleanup_free char *fifo = obi_test_path_in(f, "t/z/pipe");
    assert_int_equal(mkfifo(fifo, 0644), 0);

    cleanup_free char *root = obi_test_path_in(f, "t");
    obi_node node = {0};
    obi_error *err = NULL;
    assert_fails_with(err, obi_ingest_path(f->blobs, f->dirs, root, NULL, &node, &err), -EINVAL,
                      "t/z/pipe: unsupported file type (fifo)");
    assert_int_equal(node.kind, 0);

    /* a-sub was put into the putter before the failure; it must not have been committed. */
    obi_blob_service *blobs2 = NULL;
    obi_directory_service *dirs2 = NULL;
    assert_ok(obi_memory_blob_service_new(&blobs2, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&dirs2, err_ptr_));
    cleanup_free char *sub = obi_test_path_in(f, "t/a-sub");
    cleanup_node obi_node sub_node = {0};
    assert_ok(obi_ingest_path(blobs2, dirs2, sub, NULL, &sub_node, err_ptr_));
    obi_directory *dir = NULL;
    assert_int_equal(obi_directory_get(f->dirs, &sub_node.digest, &dir, &err), -ENOENT);
    obi_error_free(err);
    assert_null(dir);
    obi_blob_service_free(blobs2);
    obi_directory_service_free(dirs2);
}

static void test_ingest_reports_a_missing_path(void **state)
{
    fixture *f = *state;
    cleanup_free char *p = obi_test_path_in(f, "nope");
    obi_node node = {0};
    obi_error *err = NULL;
    assert_fails_with(err, obi_ingest_path(f->blobs, f->dirs, p, NULL, &node, &err), -ENOENT,
                      "nope");
}

static void test_ingest_feeds_refscan_contents_and_targets_not_names(void **state)
{
    fixture *f = *state;
    make_dir(f, "r/name-needle-dir");
    /* A needle straddling ingest's 1 MiB read buffer boundary. */
    size_t big_len = (1 << 20) + 100;
    char *big = malloc(big_len + 1);
    memset(big, '.', big_len);
    memcpy(big + (1 << 20) - 6, "straddle-needle", 15);
    big[big_len] = 0;
    obi_test_write_text(f, "r/big", big, 0644);
    free(big);
    obi_test_write_text(f, "r/name-needle", "contains content-needle here", 0644);
    /* Two files whose concatenation would contain a needle: separate streams. */
    obi_test_write_text(f, "r/split1", "spl", 0644);
    obi_test_write_text(f, "r/split2", "it-needle", 0644);
    cleanup_free char *link = obi_test_path_in(f, "r/link");
    assert_int_equal(symlink("/nix/store/target-needle", link), 0);

    const char *needles[] = {"content-needle", "target-needle", "name-needle", "straddle-needle",
                             "split-needle"};
    cleanup_refscan obi_refscan *scanner = NULL;
    assert_ok(obi_refscan_new_strings(needles, 5, &scanner, err_ptr_));
    cleanup_refscan_state obi_refscan_state *scan = NULL;
    assert_ok(obi_refscan_state_new(scanner, &scan, err_ptr_));
    obi_ingest_options opts = {.refscan = scan};
    cleanup_node obi_node node = {0};
    ingest(f, "r", &opts, &node);
    cleanup_free size_t *found = NULL;
    size_t n = 0;
    assert_ok(obi_refscan_state_result(scan, &found, &n, err_ptr_));
    assert_int_equal(n, 3);
    assert_int_equal(found[0], 0);
    assert_int_equal(found[1], 1);
    assert_int_equal(found[2], 3);
}

static void test_ingest_handles_paths_longer_than_path_max(void **state)
{
    fixture *f = *state;
    make_dir(f, "deep");
    cleanup_free char *root = obi_test_path_in(f, "deep");
    char name[201];
    memset(name, 'n', 200);
    name[200] = 0;
    int fd = open(root, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    for (int level = 0; level < 30; level++) { /* 30 * 201 bytes > PATH_MAX */
        assert_int_equal(mkdirat(fd, name, 0755), 0);
        int next = openat(fd, name, O_RDONLY | O_DIRECTORY);
        assert_true(next >= 0);
        close(fd);
        fd = next;
    }
    int file = openat(fd, "leaf", O_WRONLY | O_CREAT, 0644);
    assert_true(file >= 0);
    assert_int_equal(write(file, "leaf", 4), 4);
    close(file);
    close(fd);
    cleanup_node obi_node node = {0};
    ingest(f, "deep", NULL, &node);
    assert_int_equal(node.size, 31);
}

/* A blob service that counts the writers opened through it and forwards to another; with
 * change_path set, it rewrites that file (same size, other contents) when a writer expecting a
 * digest is opened: a file changed between being hashed and being copied. */
typedef struct counting_blobs {
    obi_blob_service base;
    obi_blob_service *inner;
    int writers;
    const char *change_path;
    int asked; /* has() calls */
} counting_blobs;

static int counting_has(obi_blob_service *svc, const obi_digest *digest, obi_error **err)
{
    counting_blobs *c = (counting_blobs *)svc;
    c->asked++;
    return obi_blob_has(c->inner, digest, err);
}

static int counting_open_read(obi_blob_service *svc, const obi_digest *digest,
                              obi_blob_reader **out, obi_error **err)
{
    counting_blobs *c = (counting_blobs *)svc;
    return c->inner->ops->open_read(c->inner, digest, out, err);
}

static int counting_open_write(obi_blob_service *svc, obi_blob_writer **out, obi_error **err)
{
    counting_blobs *c = (counting_blobs *)svc;
    c->writers++;
    return obi_blob_open_write(c->inner, out, err);
}

static int counting_open_write_expecting(obi_blob_service *svc, const obi_digest *expected,
                                         obi_blob_writer **out, obi_error **err)
{
    counting_blobs *c = (counting_blobs *)svc;
    c->writers++;
    if (c->change_path) {
        int fd = open(c->change_path, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "changed", 7, 0), 7);
        close(fd);
    }
    return obi_blob_open_write_expecting(c->inner, expected, out, err);
}

static void counting_free(obi_blob_service *svc)
{
    (void)svc;
}

static const struct obi_blob_service_ops counting_ops = {
    .has = counting_has,
    .open_read = counting_open_read,
    .open_write = counting_open_write,
    .open_write_expecting = counting_open_write_expecting,
    .free = counting_free,
};

static void write_sized(fixture *f, const char *rel, size_t size, const char *needle)
{
    char *text = malloc(size + 1);
    memset(text, 'x', size);
    if (needle)
        memcpy(text + size / 2, needle, strlen(needle));
    text[size] = 0;
    obi_test_write_text(f, rel, text, 0644);
    free(text);
}

/* Re-ingesting an unchanged tree writes no blob the store has, small (hashed in memory) or big
 * (hashed from the file first), and still scans every file for references. */
static void test_ingest_writes_no_blob_the_store_has(void **state)
{
    fixture *f = *state;
    make_dir(f, "t");
    write_sized(f, "t/small", 100, "small-needle");
    write_sized(f, "t/edge", 64 << 10, NULL);
    write_sized(f, "t/over", (64 << 10) + 1, "over-needle");
    counting_blobs counting = {{&counting_ops}, f->blobs, 0, NULL, 0};
    const char *needles[] = {"small-needle", "over-needle"};
    cleanup_refscan obi_refscan *scanner = NULL;
    assert_ok(obi_refscan_new_strings(needles, 2, &scanner, err_ptr_));
    obi_node first = {0}, second = {0};
    cleanup_free char *path = obi_test_path_in(f, "t");
    assert_ok(obi_ingest_path(&counting.base, f->dirs, path, NULL, &first, err_ptr_));
    assert_int_equal(counting.writers, 3);

    counting.writers = 0;
    cleanup_refscan_state obi_refscan_state *scan = NULL;
    assert_ok(obi_refscan_state_new(scanner, &scan, err_ptr_));
    obi_ingest_options opts = {.refscan = scan};
    assert_ok(obi_ingest_path(&counting.base, f->dirs, path, &opts, &second, err_ptr_));
    assert_int_equal(counting.writers, 0);
    assert_true(obi_digest_equal(&first.digest, &second.digest));
    cleanup_free size_t *found = NULL;
    size_t n = 0;
    assert_ok(obi_refscan_state_result(scan, &found, &n, err_ptr_));
    assert_int_equal(n, 2);
    obi_node_clear(&first);
    obi_node_clear(&second);
}

static int count_directory(const obi_digest *digest, void *ctx, obi_error **err)
{
    (void)digest;
    (void)err;
    (*(int *)ctx)++;
    return 0;
}

/* A big file is hashed before it is copied (the store may have it); contents that differ by
 * the copy are an error naming the file, and no directory refers to either version. */
static void test_ingest_big_file_changed_between_hash_and_copy_is_an_error(void **state)
{
    fixture *f = *state;
    make_dir(f, "t");
    write_sized(f, "t/big", 1 << 20, NULL);
    cleanup_free char *big = obi_test_path_in(f, "t/big");
    counting_blobs counting = {{&counting_ops}, f->blobs, 0, big, 0};
    cleanup_free char *path = obi_test_path_in(f, "t");
    obi_node node = {0};
    obi_error *err = NULL;
    assert_fails_with(err, obi_ingest_path(&counting.base, f->dirs, path, NULL, &node, &err),
                      -EAGAIN, "t/big: changed while being ingested");
    assert_int_equal(counting.writers, 1);
    int directories = 0;
    assert_ok(obi_directory_service_list(f->dirs, count_directory, &directories, err_ptr_));
    assert_int_equal(directories, 0);
}

/* A fresh import asks the store about few small files once it lacked one (every 16th still
 * asks); a re-import asks about each and writes none. */
static void test_ingest_fresh_import_asks_about_few_small_files(void **state)
{
    fixture *f = *state;
    make_dir(f, "t");
    for (int i = 0; i < 40; i++) {
        char rel[32], text[32];
        snprintf(rel, sizeof rel, "t/f%02d", i);
        snprintf(text, sizeof text, "file %d", i);
        obi_test_write_text(f, rel, text, 0644);
    }
    counting_blobs counting = {{&counting_ops}, f->blobs, 0, NULL, 0};
    cleanup_free char *path = obi_test_path_in(f, "t");
    cleanup_node obi_node first = {0}, second = {0};
    assert_ok(obi_ingest_path(&counting.base, f->dirs, path, NULL, &first, err_ptr_));
    assert_int_equal(counting.writers, 40);
    assert_int_equal(counting.asked, 3); /* the first, the 17th and the 33rd */
    counting.writers = counting.asked = 0;
    assert_ok(obi_ingest_path(&counting.base, f->dirs, path, NULL, &second, err_ptr_));
    assert_int_equal(counting.writers, 0);
    assert_int_equal(counting.asked, 40);
    assert_true(obi_digest_equal(&first.digest, &second.digest));
}

typedef struct truncating {
    const char *path;
    off_t to;
    int calls;
} truncating;

static void truncate_on_first_report(void *ctx, uint64_t bytes, uint64_t files)
{
    (void)bytes;
    (void)files;
    truncating *t = ctx;
    if (t->calls++ == 0)
        assert_int_equal(truncate(t->path, t->to), 0);
}

/* A big file is hashed through a mapping when the store may have it; one truncated meanwhile
 * (here: right after its head was read) is an error naming it, not a crash (SIGBUS caught). */
static void test_ingest_big_file_truncated_while_hashed_is_an_error(void **state)
{
    fixture *f = *state;
    make_dir(f, "t");
    write_sized(f, "t/big", 20 << 20, NULL);
    cleanup_free char *big = obi_test_path_in(f, "t/big");
    truncating t = {big, 1 << 20, 0};
    obi_progress progress = {.fn = truncate_on_first_report, .ctx = &t};
    obi_ingest_options opts = {.progress = &progress};
    cleanup_free char *path = obi_test_path_in(f, "t");
    obi_node node = {0};
    obi_error *err = NULL;
    assert_fails_with(err, obi_ingest_path(f->blobs, f->dirs, path, &opts, &node, &err), -EAGAIN,
                      "t/big: changed while being ingested (shorter than the 20971520 bytes");
    /* truncated inside the last page: no fault there, but still noticed */
    write_sized(f, "t/big", (2 << 20) + 3000, NULL);
    t = (truncating){big, (2 << 20) + 100, 0};
    assert_fails_with(err, obi_ingest_path(f->blobs, f->dirs, path, &opts, &node, &err), -EAGAIN,
                      "t/big: changed while being ingested (shorter than the 2100152 bytes");
}

/* ---- on several threads (the on-disk store) ---- */

typedef struct local_store {
    char *root;
    obi_blob_service *blobs;
    obi_directory_service *dirs;
} local_store;

static void local_store_open(fixture *f, const char *rel, local_store *out)
{
    out->root = obi_test_path_in(f, rel);
    assert_ok(obi_local_blob_service_open(out->root, &out->blobs, err_ptr_));
    assert_ok(obi_local_directory_service_open(out->root, &out->dirs, err_ptr_));
}

static void local_store_close(local_store *store)
{
    obi_blob_service_free(store->blobs);
    obi_directory_service_free(store->dirs);
    free(store->root);
}

static int count_blob(const obi_digest *digest, void *ctx, obi_error **err)
{
    (void)digest;
    (void)err;
    (*(int *)ctx)++;
    return 0;
}

static int count_entries(const char *dir)
{
    int n = 0;
    cleanup_dir DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    return n;
}

/* A tree of every kind of entry: nested directories of small files, files above the small-file
 * size, an executable, a symlink, empty files and an empty directory. */
static void write_mixed_tree(fixture *f)
{
    make_dir(f, "t/empty");
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < 60; i++) {
            char rel[64], text[64];
            snprintf(rel, sizeof rel, "t/d%d/sub/f%03d", d, i);
            if (i == 0) {
                cleanup_free char *dir = obi_test_path_in(f, rel);
                *strrchr(dir, '/') = '\0';
                assert_ok(obi_mkdir_p(dir, 0755, err_ptr_));
            }
            snprintf(text, sizeof text, i % 7 ? "file %d of %d" : "", i, d);
            obi_test_write_text(f, rel, text, i == 5 ? 0755 : 0644);
        }
    write_sized(f, "t/d1/big", 1 << 20, NULL);
    write_sized(f, "t/d2/bigger", (3 << 20) + 17, NULL);
    write_sized(f, "t/over", (64 << 10) + 1, NULL);
    cleanup_free char *link = obi_test_path_in(f, "t/d0/link");
    assert_int_equal(symlink("sub/f001", link), 0);
}

/* Files ingested by a pool of threads make the tree one thread makes, every blob stored and
 * durable (no temporary file left); a re-import on threads writes nothing (no owner lock). */
static void test_ingest_on_threads_gives_the_tree_one_thread_gives(void **state)
{
    fixture *f = *state;
    write_mixed_tree(f);
    cleanup_free char *path = obi_test_path_in(f, "t");
    local_store one, many;
    local_store_open(f, "one", &one);
    local_store_open(f, "many", &many);
    cleanup_node obi_node a = {0}, b = {0}, again = {0};
    setenv("OBI_INGEST_THREADS", "0", 1);
    assert_ok(obi_ingest_path(one.blobs, one.dirs, path, NULL, &a, err_ptr_));
    setenv("OBI_INGEST_THREADS", "3", 1);
    assert_ok(obi_ingest_path(many.blobs, many.dirs, path, NULL, &b, err_ptr_));
    assert_true(obi_digest_equal(&a.digest, &b.digest));
    assert_int_equal(a.size, b.size);
    int n_one = 0, n_many = 0;
    assert_ok(obi_blob_service_list(one.blobs, count_blob, &n_one, err_ptr_));
    assert_ok(obi_blob_service_list(many.blobs, count_blob, &n_many, err_ptr_));
    assert_int_equal(n_many, n_one);
    assert_true(n_one > 150);

    local_store_close(&many); /* a new process's view: nothing pending, no lock file */
    local_store_open(f, "many", &many);
    cleanup_free char *owners = obi_path_join(many.root, "owners");
    assert_int_equal(count_entries(owners), 0);
    assert_ok(obi_ingest_path(many.blobs, many.dirs, path, NULL, &again, err_ptr_));
    assert_true(obi_digest_equal(&again.digest, &a.digest));
    assert_int_equal(count_entries(owners), 0);
    unsetenv("OBI_INGEST_THREADS");
    local_store_close(&one);
    local_store_close(&many);
}

/* When a file fails on one of the threads, the error is the first failure in walk order, as on
 * one thread, and no directory is committed. The store is made to fail every blob whose digest
 * starts with one byte (its fan-out directory replaced by a file). */
static void test_ingest_on_threads_reports_the_first_failure_in_walk_order(void **state)
{
    fixture *f = *state;
    make_dir(f, "t/a");
    make_dir(f, "t/b");
    obi_digest digests[200];
    for (int i = 0; i < 200; i++) {
        char rel[32], text[32];
        snprintf(rel, sizeof rel, "t/%c/f%03d", i < 100 ? 'a' : 'b', i);
        snprintf(text, sizeof text, "contents %d", i);
        obi_test_write_text(f, rel, text, 0644);
        obi_blake3(text, strlen(text), digests[i].bytes);
    }
    unsigned byte = digests[150].bytes[0];
    int first = 0;
    while (digests[first].bytes[0] != byte)
        first++;
    char expected[32];
    snprintf(expected, sizeof expected, "t/%c/f%03d: create", first < 100 ? 'a' : 'b', first);
    cleanup_free char *path = obi_test_path_in(f, "t");
    const char *threads[] = {"3", "0", "1"};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        char rel[16], fanout[64];
        snprintf(rel, sizeof rel, "store%zu", t);
        local_store store;
        local_store_open(f, rel, &store);
        snprintf(fanout, sizeof fanout, "blobs/%02x", byte);
        cleanup_free char *fanout_path = obi_path_join(store.root, fanout);
        assert_int_equal(rmdir(fanout_path), 0);
        int fd = open(fanout_path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        assert_true(fd >= 0);
        close(fd);
        setenv("OBI_INGEST_THREADS", threads[t], 1);
        obi_node node = {0};
        obi_error *err = NULL;
        assert_fails_with(err, obi_ingest_path(store.blobs, store.dirs, path, NULL, &node, &err),
                          -ENOTDIR, expected);
        int directories = 0;
        assert_ok(obi_directory_service_list(store.dirs, count_directory, &directories, err_ptr_));
        assert_int_equal(directories, 0);
        local_store_close(&store);
    }
    unsetenv("OBI_INGEST_THREADS");
}

/* ---- adopting files (obi_ingest_options.adopt; docs/store.md, "Adopting a build's outputs") */

#define SLOT_UID 61234 /* stands for a build's id slot: the files' owner before ingest */

static bool skip_unless_root(void)
{
    if (geteuid() == 0)
        return false;
    print_message("skipped: adopting needs root (chown, leases)\n");
    return true;
}

/* A file of the build: owned by the slot's uid, mode as given (set-id bits too). */
static void write_build_file(fixture *f, const char *rel, const char *text, mode_t mode)
{
    obi_test_write_text(f, rel, text, 0644);
    cleanup_free char *p = obi_test_path_in(f, rel);
    assert_int_equal(chown(p, SLOT_UID, SLOT_UID), 0);
    assert_int_equal(chmod(p, mode), 0);
}

static void stat_in(fixture *f, const char *rel, struct stat *st)
{
    cleanup_free char *p = obi_test_path_in(f, rel);
    assert_int_equal(lstat(p, st), 0);
}

/* The stat of the blob file of digest in the on-disk store at root. */
static void stat_blob(const char *root, const obi_digest *digest, struct stat *st)
{
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(digest, hex);
    cleanup_free char *p = NULL;
    assert_true(asprintf(&p, "%s/blobs/%.2s/%s", root, hex, hex) > 0);
    assert_int_equal(lstat(p, st), 0);
}

static const obi_node *file_named(const obi_directory *dir, const char *name)
{
    for (size_t i = 0; i < dir->n_files; i++)
        if (!strcmp((const char *)dir->files[i].name.data, name))
            return &dir->files[i];
    fail_msg("no file %s", name);
    return NULL;
}

/* Temporary files (dotfiles) left in the fan-out directories. */
static int count_temps(const char *root)
{
    int n = 0;
    for (unsigned byte = 0; byte < 256; byte++) {
        cleanup_free char *p = NULL;
        assert_true(asprintf(&p, "%s/blobs/%02x", root, byte) > 0);
        cleanup_dir DIR *d = opendir(p);
        struct dirent *e;
        while (d && (e = readdir(d)))
            n += e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    }
    return n;
}

static void ingest_adopting(local_store *store, fixture *f, const char *rel, obi_node *out)
{
    cleanup_free char *p = obi_test_path_in(f, rel);
    obi_ingest_options opts = {.adopt = true};
    assert_ok(obi_ingest_path(store->blobs, store->dirs, p, &opts, out, err_ptr_));
}

/* A file with one link becomes the blob itself, small or big: the same inode, now the store
 * owner's with mode 0444 (set-id and write bits gone), the FileNode still executable; every
 * byte scanned for references; nothing temporary left and the blob durable and named. */
static void test_ingest_adopt_takes_the_file_itself(void **state)
{
    fixture *f = *state;
    if (skip_unless_root())
        return;
    make_dir(f, "t/sub");
    write_build_file(f, "t/setuid", "#!/bin/sh\n", 06777);
    write_build_file(f, "t/sub/small", "small-needle\n", 0666);
    write_sized(f, "t/big", (1 << 20) + 3, "big-needle");
    cleanup_free char *big = obi_test_path_in(f, "t/big");
    assert_int_equal(chown(big, SLOT_UID, SLOT_UID), 0);
    cleanup_free char *link = obi_test_path_in(f, "t/link");
    assert_int_equal(symlink("sub/small", link), 0);
    struct stat before_setuid, before_small, before_big;
    stat_in(f, "t/setuid", &before_setuid);
    stat_in(f, "t/sub/small", &before_small);
    stat_in(f, "t/big", &before_big);

    local_store store;
    local_store_open(f, "s", &store);
    const char *needles[] = {"small-needle", "big-needle", "absent-needle"};
    cleanup_refscan obi_refscan *scanner = NULL;
    assert_ok(obi_refscan_new_strings(needles, 3, &scanner, err_ptr_));
    cleanup_refscan_state obi_refscan_state *scan = NULL;
    assert_ok(obi_refscan_state_new(scanner, &scan, err_ptr_));
    cleanup_free char *path = obi_test_path_in(f, "t");
    obi_ingest_options opts = {.adopt = true, .refscan = scan};
    cleanup_node obi_node root = {0};
    assert_ok(obi_ingest_path(store.blobs, store.dirs, path, &opts, &root, err_ptr_));
    cleanup_free size_t *found = NULL;
    size_t n_found = 0;
    assert_ok(obi_refscan_state_result(scan, &found, &n_found, err_ptr_));
    assert_int_equal(n_found, 2);

    cleanup_directory obi_directory *top = NULL;
    assert_ok(obi_directory_get(store.dirs, &root.digest, &top, err_ptr_));
    assert_int_equal(top->n_symlinks, 1);
    const obi_node *setuid = file_named(top, "setuid");
    assert_true(setuid->executable);
    const obi_node *big_node = file_named(top, "big");
    assert_int_equal(big_node->size, (1 << 20) + 3);
    cleanup_directory obi_directory *sub = NULL;
    assert_ok(obi_directory_get(store.dirs, &top->directories[0].digest, &sub, err_ptr_));
    const obi_node *small = file_named(sub, "small");
    struct {
        const obi_node *node;
        const struct stat *before;
    } files[] = {{setuid, &before_setuid}, {small, &before_small}, {big_node, &before_big}};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(files); i++) {
        struct stat blob;
        stat_blob(store.root, &files[i].node->digest, &blob);
        assert_int_equal(blob.st_ino, files[i].before->st_ino);
        assert_int_equal(blob.st_mode, S_IFREG | 0444);
        assert_int_equal(blob.st_uid, geteuid());
        assert_int_equal(blob.st_gid, getegid());
        assert_int_equal(blob.st_nlink, 2); /* the build's name and the blob's */
    }
    assert_int_equal(count_temps(store.root), 0);
    cleanup_free uint8_t *data = NULL;
    size_t len = 0;
    assert_ok(obi_blob_get_bytes(store.blobs, &small->digest, 100, &data, &len, err_ptr_));
    assert_int_equal(len, 13);
    assert_memory_equal(data, "small-needle\n", 13);
    local_store_close(&store);
}

/* A file with a second link (the build may keep it somewhere that outlives it, or it is a link
 * to someone else's file) is copied, and left exactly as it was: owner, mode, link count. */
static void test_ingest_adopt_copies_a_file_with_a_second_link(void **state)
{
    fixture *f = *state;
    if (skip_unless_root())
        return;
    make_dir(f, "t");
    write_build_file(f, "t/f", "linked twice\n", 0666);
    cleanup_free char *p = obi_test_path_in(f, "t/f");
    cleanup_free char *kept = obi_test_path_in(f, "kept");
    assert_int_equal(link(p, kept), 0);
    local_store store;
    local_store_open(f, "s", &store);
    cleanup_node obi_node node = {0};
    ingest_adopting(&store, f, "t/f", &node);
    struct stat blob, source;
    stat_blob(store.root, &node.digest, &blob);
    stat_in(f, "t/f", &source);
    assert_int_not_equal(blob.st_ino, source.st_ino);
    assert_int_equal(blob.st_mode, S_IFREG | 0444);
    assert_int_equal(blob.st_nlink, 1);
    assert_int_equal(source.st_uid, SLOT_UID);
    assert_int_equal(source.st_mode, S_IFREG | 0666);
    assert_int_equal(source.st_nlink, 2);
    local_store_close(&store);
}

/* A file this process's user owns is no build's output (a build runs as its slot's id): even
 * with adopt (a caller's mistake, as a /nix/store import would be) it is copied and left as it
 * was, mode and owner. */
static void test_ingest_adopt_copies_a_file_the_process_owns(void **state)
{
    fixture *f = *state;
    if (skip_unless_root())
        return;
    make_dir(f, "t");
    obi_test_write_text(f, "t/f", "a host file\n", 0555);
    struct stat before;
    stat_in(f, "t/f", &before);
    local_store store;
    local_store_open(f, "s", &store);
    cleanup_node obi_node node = {0};
    ingest_adopting(&store, f, "t/f", &node);
    struct stat blob, after;
    stat_blob(store.root, &node.digest, &blob);
    stat_in(f, "t/f", &after);
    assert_int_not_equal(blob.st_ino, before.st_ino);
    assert_int_equal(after.st_mode, S_IFREG | 0555);
    assert_int_equal(after.st_nlink, 1);
    assert_int_equal(after.st_ctim.tv_sec, before.st_ctim.tv_sec);
    assert_int_equal(after.st_ctim.tv_nsec, before.st_ctim.tv_nsec);
    local_store_close(&store);
}

/* A file some process still has open for writing (a descriptor the build passed out before it
 * ended) is copied: what that process writes later reaches the build's file, never the blob. */
static void test_ingest_adopt_copies_a_file_open_for_writing(void **state)
{
    fixture *f = *state;
    if (skip_unless_root())
        return;
    make_dir(f, "t");
    write_build_file(f, "t/f", "original\n", 0666);
    cleanup_free char *p = obi_test_path_in(f, "t/f");
    cleanup_close int writer = open(p, O_WRONLY | O_CLOEXEC);
    assert_true(writer >= 0);
    local_store store;
    local_store_open(f, "s", &store);
    cleanup_node obi_node node = {0};
    ingest_adopting(&store, f, "t/f", &node);
    struct stat blob, source;
    stat_blob(store.root, &node.digest, &blob);
    stat_in(f, "t/f", &source);
    assert_int_not_equal(blob.st_ino, source.st_ino);
    assert_int_equal(pwrite(writer, "CHANGED!\n", 9, 0), 9);
    cleanup_free uint8_t *data = NULL;
    size_t len = 0;
    assert_ok(obi_blob_get_bytes(store.blobs, &node.digest, 100, &data, &len, err_ptr_));
    assert_int_equal(len, 9);
    assert_memory_equal(data, "original\n", 9);
    local_store_close(&store);
}

/* Extended attributes (an ACL, a capability set: ACLs are xattrs too) would go with the
 * inode: such a file is copied, and the blob has none. */
static void test_ingest_adopt_copies_a_file_with_xattrs(void **state)
{
    fixture *f = *state;
    if (skip_unless_root())
        return;
    make_dir(f, "t");
    write_build_file(f, "t/f", "with an xattr\n", 0644);
    cleanup_free char *p = obi_test_path_in(f, "t/f");
    if (setxattr(p, "user.obi", "x", 1, 0) < 0) {
        print_message("skipped: no user xattrs here (%s)\n", strerror(errno));
        return;
    }
    local_store store;
    local_store_open(f, "s", &store);
    cleanup_node obi_node node = {0};
    ingest_adopting(&store, f, "t/f", &node);
    struct stat blob, source;
    stat_blob(store.root, &node.digest, &blob);
    stat_in(f, "t/f", &source);
    assert_int_not_equal(blob.st_ino, source.st_ino);
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&node.digest, hex);
    cleanup_free char *blob_path = NULL;
    assert_true(asprintf(&blob_path, "%s/blobs/%.2s/%s", store.root, hex, hex) > 0);
    assert_int_equal(listxattr(blob_path, NULL, 0), 0);
    local_store_close(&store);
}

/* A file on another filesystem than the store's blobs (a build's tmpfs scratch) is copied. */
static void test_ingest_adopt_copies_from_another_filesystem(void **state)
{
    fixture *f = *state;
    if (skip_unless_root())
        return;
    struct stat shm, tmp;
    if (stat("/dev/shm", &shm) < 0 || stat(f->tmp, &tmp) < 0 || shm.st_dev == tmp.st_dev) {
        print_message("skipped: /dev/shm is not another filesystem here\n");
        return;
    }
    char dir[] = "/dev/shm/obi-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    cleanup_free char *file = obi_path_join(dir, "f");
    cleanup_close int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "on tmpfs\n", 9), 9);
    close(steal_fd(&fd));
    struct stat source;
    assert_int_equal(stat(file, &source), 0);
    local_store store;
    local_store_open(f, "s", &store);
    cleanup_node obi_node node = {0};
    obi_ingest_options opts = {.adopt = true};
    assert_ok(obi_ingest_path(store.blobs, store.dirs, file, &opts, &node, err_ptr_));
    struct stat blob;
    stat_blob(store.root, &node.digest, &blob);
    assert_int_equal(blob.st_mode, S_IFREG | 0444);
    assert_int_equal(blob.st_nlink, 1);
    struct stat after;
    assert_int_equal(stat(file, &after), 0);
    assert_int_equal(after.st_mode, source.st_mode); /* not adopted: left alone */
    unlink(file);
    rmdir(dir);
    local_store_close(&store);
}

/* A blob the store has is not written again: the build's file is not linked, the stored blob
 * stays the inode it was. */
static void test_ingest_adopt_writes_nothing_the_store_has(void **state)
{
    fixture *f = *state;
    if (skip_unless_root())
        return;
    make_dir(f, "t");
    obi_test_write_text(f, "first", "same contents\n", 0644);
    write_build_file(f, "t/f", "same contents\n", 0644);
    local_store store;
    local_store_open(f, "s", &store);
    cleanup_node obi_node first = {0}, node = {0};
    cleanup_free char *p = obi_test_path_in(f, "first");
    assert_ok(obi_ingest_path(store.blobs, store.dirs, p, NULL, &first, err_ptr_));
    struct stat stored;
    stat_blob(store.root, &first.digest, &stored);
    ingest_adopting(&store, f, "t/f", &node);
    assert_true(obi_digest_equal(&first.digest, &node.digest));
    struct stat blob, source;
    stat_blob(store.root, &node.digest, &blob);
    stat_in(f, "t/f", &source);
    assert_int_equal(blob.st_ino, stored.st_ino);
    assert_int_equal(source.st_nlink, 1);
    local_store_close(&store);
}

/* A fifo (or device, socket) in the tree is refused as without adopting. */
static void test_ingest_adopt_still_refuses_a_fifo(void **state)
{
    fixture *f = *state;
    if (skip_unless_root())
        return;
    make_dir(f, "t");
    cleanup_free char *fifo = obi_test_path_in(f, "t/pipe");
    assert_int_equal(mkfifo(fifo, 0666), 0);
    local_store store;
    local_store_open(f, "s", &store);
    cleanup_free char *p = obi_test_path_in(f, "t");
    obi_ingest_options opts = {.adopt = true};
    obi_node node = {0};
    obi_error *err = NULL;
    assert_fails_with(err, obi_ingest_path(store.blobs, store.dirs, p, &opts, &node, &err), -EINVAL,
                      "t/pipe: unsupported file type (fifo)");
    local_store_close(&store);
}

static void die_after_first_file(void *ctx, uint64_t bytes, uint64_t files)
{
    (void)ctx;
    (void)bytes;
    if (files >= 1)
        raise(SIGKILL);
}

/* An adopted file is a pending blob until the barrier: a process killed before it leaves no
 * blob name, and the next open of the store removes the temporary link it made (the build's
 * file is back to one link). */
static void test_ingest_adopt_killed_before_the_barrier_leaves_no_blob(void **state)
{
    fixture *f = *state;
    if (skip_unless_root())
        return;
    make_dir(f, "t");
    write_build_file(f, "t/f", "adopted, then killed\n", 0644);
    cleanup_free char *root = obi_test_path_in(f, "s");
    cleanup_free char *p = obi_test_path_in(f, "t/f");
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        local_store store;
        local_store_open(f, "s", &store);
        obi_progress die = {die_after_first_file, NULL, NULL};
        obi_ingest_options opts = {.adopt = true, .progress = &die};
        obi_node node = {0};
        obi_error *err = NULL;
        obi_ingest_path(store.blobs, store.dirs, p, &opts, &node, &err);
        _exit(3); /* not reached */
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    struct stat source;
    stat_in(f, "t/f", &source);
    assert_int_equal(source.st_nlink, 2); /* the build's name and the temporary one */
    assert_int_equal(count_temps(root), 1);
    local_store store;
    local_store_open(f, "s", &store); /* removes a dead owner's temporary files */
    obi_digest digest;
    obi_digest_of("adopted, then killed\n", 21, &digest);
    obi_error *has_err = NULL;
    assert_int_equal(obi_blob_has(store.blobs, &digest, &has_err), 0);
    assert_int_equal(count_temps(root), 0);
    stat_in(f, "t/f", &source);
    assert_int_equal(source.st_nlink, 1);
    local_store_close(&store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, obi_test_store_setup, obi_test_store_teardown)
        T(test_ingest_file_is_a_blob_with_its_size),
        T(test_ingest_executable_iff_owner_execute_bit),
        T(test_ingest_directory_sorted_bytewise_with_recursive_size),
        T(test_ingest_root_symlink_is_not_followed_even_with_trailing_slash),
        T(test_ingest_uses_the_name_override),
        T(test_ingest_rejects_an_invalid_name_override),
        T(test_ingest_names_dot_after_the_real_directory),
        T(test_ingest_refuses_fifo_naming_it_and_commits_no_directory),
        T(test_ingest_reports_a_missing_path),
        T(test_ingest_feeds_refscan_contents_and_targets_not_names),
        T(test_ingest_handles_paths_longer_than_path_max),
        T(test_ingest_writes_no_blob_the_store_has),
        T(test_ingest_big_file_changed_between_hash_and_copy_is_an_error),
        T(test_ingest_fresh_import_asks_about_few_small_files),
        T(test_ingest_big_file_truncated_while_hashed_is_an_error),
        T(test_ingest_on_threads_gives_the_tree_one_thread_gives),
        T(test_ingest_on_threads_reports_the_first_failure_in_walk_order),
        T(test_ingest_adopt_takes_the_file_itself),
        T(test_ingest_adopt_copies_a_file_with_a_second_link),
        T(test_ingest_adopt_copies_a_file_the_process_owns),
        T(test_ingest_adopt_copies_a_file_open_for_writing),
        T(test_ingest_adopt_copies_a_file_with_xattrs),
        T(test_ingest_adopt_copies_from_another_filesystem),
        T(test_ingest_adopt_writes_nothing_the_store_has),
        T(test_ingest_adopt_still_refuses_a_fifo),
        T(test_ingest_adopt_killed_before_the_barrier_leaves_no_blob),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
