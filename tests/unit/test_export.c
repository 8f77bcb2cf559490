/*
 * Unit tests for export and materialize (src/castore/export.c): round trip with modes, digest
 * and size checks against lying stores, names that would escape, existing destinations,
 * nothing left behind on failure, and hard links from the on-disk store.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/export.h"
#include "ocibuild/fs.h"
#include "ocibuild/ingest.h"
#include "ocibuild/store_backend.h"
#include "test_helpers.h"

typedef obi_test_store_fixture fixture;

static mode_t mode_of(fixture *f, const char *rel)
{
    cleanup_free char *p = obi_test_path_in(f, rel);
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    return st.st_mode;
}

static void make_tree(fixture *f)
{
    cleanup_free char *sub = obi_test_path_in(f, "src/sub");
    assert_ok(obi_mkdir_p(sub, 0755, err_ptr_));
    obi_test_write_text(f, "src/file", "file\n", 0644);
    obi_test_write_text(f, "src/tool", "#!/bin/sh\n", 0755);
    obi_test_write_text(f, "src/sub/empty", "", 0600);
    cleanup_free char *link = obi_test_path_in(f, "src/link");
    assert_int_equal(symlink("sub/empty", link), 0);
}

static void test_export_round_trips_a_tree_with_modes(void **state)
{
    fixture *f = *state;
    make_tree(f);
    cleanup_free char *src = obi_test_path_in(f, "src"), *dest = obi_test_path_in(f, "dest");
    cleanup_node obi_node node = {0};
    assert_ok(obi_ingest_path(f->blobs, f->dirs, src, NULL, &node, err_ptr_));
    assert_ok(obi_export_node(f->blobs, f->dirs, &node, dest, err_ptr_));
    assert_int_equal(mode_of(f, "dest") & 07777, 0555);
    assert_int_equal(mode_of(f, "dest/sub") & 07777, 0555);
    assert_int_equal(mode_of(f, "dest/file") & 07777, 0444);
    assert_int_equal(mode_of(f, "dest/tool") & 07777, 0555);
    assert_int_equal(mode_of(f, "dest/sub/empty") & 07777, 0444);
    assert_true(S_ISLNK(mode_of(f, "dest/link")));
    cleanup_free char *text = NULL;
    size_t len = 0;
    cleanup_free char *file = obi_test_path_in(f, "dest/file");
    assert_ok(obi_read_file(file, 100, &text, &len, err_ptr_));
    assert_string_equal(text, "file\n");
    /* Re-ingesting the export gives the same digest. */
    cleanup_node obi_node again = {0};
    assert_ok(obi_ingest_path(f->blobs, f->dirs, dest, NULL, &again, err_ptr_));
    assert_true(obi_digest_equal(&node.digest, &again.digest));
}

static void test_export_refuses_an_existing_destination(void **state)
{
    fixture *f = *state;
    obi_test_write_text(f, "there", "old", 0644);
    cleanup_node obi_node node = {0};
    obi_digest d;
    assert_ok(obi_blob_put_bytes(f->blobs, "new", 3, &d, err_ptr_));
    assert_ok(obi_node_init_file(&node, "x", 1, &d, 3, false));
    cleanup_free char *dest = obi_test_path_in(f, "there");
    obi_error *err = NULL;
    assert_fails_with(err, obi_export_node(f->blobs, f->dirs, &node, dest, &err), -EEXIST,
                      "already exists");
    cleanup_free char *text = NULL;
    size_t len = 0;
    assert_ok(obi_read_file(dest, 100, &text, &len, err_ptr_));
    assert_string_equal(text, "old");
}

static void test_export_rejects_wrong_file_size_and_leaves_nothing(void **state)
{
    fixture *f = *state;
    obi_digest d;
    assert_ok(obi_blob_put_bytes(f->blobs, "12345", 5, &d, err_ptr_));
    cleanup_node obi_node node = {0};
    assert_ok(obi_node_init_file(&node, "x", 1, &d, 4, false));
    cleanup_free char *dest = obi_test_path_in(f, "out");
    obi_error *err = NULL;
    assert_fails_with(err, obi_export_node(f->blobs, f->dirs, &node, dest, &err), -EIO, "out");
    assert_int_equal(access(dest, F_OK), -1);
}

/* A blob service whose reads return the content of another blob (a lying or corrupt store). */
typedef struct lying_blobs {
    obi_blob_service base;
    obi_blob_service *inner;
    obi_digest real;
} lying_blobs;

static int lying_has(obi_blob_service *svc, const obi_digest *d, obi_error **err)
{
    return obi_blob_has(((lying_blobs *)svc)->inner, d, err);
}
static int lying_open_read(obi_blob_service *svc, const obi_digest *d, obi_blob_reader **out,
                           obi_error **err)
{
    (void)d;
    lying_blobs *l = (lying_blobs *)svc;
    return obi_blob_open_read(l->inner, &l->real, out, err);
}
static int lying_open_write(obi_blob_service *svc, obi_blob_writer **out, obi_error **err)
{
    return obi_blob_open_write(((lying_blobs *)svc)->inner, out, err);
}
static void lying_free(obi_blob_service *svc)
{
    (void)svc;
}
static const struct obi_blob_service_ops LYING_OPS = {
    .has = lying_has,
    .open_read = lying_open_read,
    .open_write = lying_open_write,
    .free = lying_free,
};

static void test_export_detects_a_blob_digest_mismatch_naming_the_path(void **state)
{
    fixture *f = *state;
    lying_blobs lying = {.base = {&LYING_OPS}, .inner = f->blobs};
    assert_ok(obi_blob_put_bytes(f->blobs, "abcde", 5, &lying.real, err_ptr_));
    obi_digest claimed;
    obi_digest_of("vwxyz", 5, &claimed);
    cleanup_node obi_node node = {0};
    assert_ok(obi_node_init_file(&node, "x", 1, &claimed, 5, false));
    cleanup_free char *dest = obi_test_path_in(f, "corrupt");
    obi_error *err = NULL;
    assert_fails_with(err, obi_export_node(&lying.base, f->dirs, &node, dest, &err), -EIO,
                      "corrupt: blob content has digest");
    assert_int_equal(access(dest, F_OK), -1);
}

/* A directory service that returns one fixed Directory, unvalidated (a hostile store). */
typedef struct hostile_dirs {
    obi_directory_service base;
    const obi_directory *dir;
} hostile_dirs;

static int hostile_get(obi_directory_service *svc, const obi_digest *d, obi_directory **out,
                       obi_error **err)
{
    (void)d;
    (void)err;
    const obi_directory *src = ((hostile_dirs *)svc)->dir;
    obi_directory *copy = obi_directory_new();
    for (size_t i = 0; i < src->n_symlinks; i++)
        assert_int_equal(obi_directory_add(copy, &src->symlinks[i]), 0);
    *out = copy;
    return 0;
}
static void hostile_free(obi_directory_service *svc)
{
    (void)svc;
}
static const struct obi_directory_service_ops HOSTILE_OPS = {
    .get = hostile_get,
    .free = hostile_free,
};

static void test_export_refuses_entry_names_that_would_escape(void **state)
{
    fixture *f = *state;
    cleanup_directory obi_directory *evil = obi_directory_new();
    cleanup_node obi_node link = {0};
    assert_int_equal(obi_node_init_symlink(&link, "../escaped", 10, "x", 1), 0);
    assert_int_equal(obi_directory_add(evil, &link), 0);
    hostile_dirs hostile = {.base = {&HOSTILE_OPS}, .dir = evil};
    obi_digest d;
    assert_ok(obi_directory_digest(evil, &d, err_ptr_));
    cleanup_node obi_node root = {0};
    assert_ok(obi_node_init_directory(&root, "r", 1, &d, obi_directory_size(evil)));
    cleanup_free char *dest = obi_test_path_in(f, "out");
    obi_error *err = NULL;
    assert_fails_with(err, obi_export_node(f->blobs, &hostile.base, &root, dest, &err), -EINVAL,
                      "out/../escaped");
    cleanup_free char *escaped = obi_test_path_in(f, "escaped");
    assert_int_equal(access(escaped, F_OK), -1);
    assert_int_equal(access(dest, F_OK), -1);
}

static void test_export_rejects_a_directory_size_that_does_not_match(void **state)
{
    fixture *f = *state;
    make_tree(f);
    cleanup_free char *src = obi_test_path_in(f, "src"), *dest = obi_test_path_in(f, "dest");
    cleanup_node obi_node node = {0};
    assert_ok(obi_ingest_path(f->blobs, f->dirs, src, NULL, &node, err_ptr_));
    node.size += 1;
    obi_error *err = NULL;
    assert_fails_with(err, obi_export_node(f->blobs, f->dirs, &node, dest, &err), -EINVAL,
                      "does not match");
    assert_int_equal(access(dest, F_OK), -1);
}

static void test_export_reports_an_absent_directory(void **state)
{
    fixture *f = *state;
    obi_digest d;
    obi_digest_of("nothing", 7, &d);
    cleanup_node obi_node node = {0};
    assert_ok(obi_node_init_directory(&node, "x", 1, &d, 0));
    cleanup_free char *dest = obi_test_path_in(f, "dest");
    obi_error *err = NULL;
    assert_fails_with(err, obi_export_node(f->blobs, f->dirs, &node, dest, &err), -ENOENT, "dest");
    assert_int_equal(access(dest, F_OK), -1);
}

static void test_materialize_hard_links_non_executables_from_the_local_store(void **state)
{
    fixture *f = *state;
    make_tree(f);
    cleanup_free char *store = obi_test_path_in(f, "store");
    obi_blob_service *blobs = NULL;
    obi_directory_service *dirs = NULL;
    assert_ok(obi_local_blob_service_open(store, &blobs, err_ptr_));
    assert_ok(obi_local_directory_service_open(store, &dirs, err_ptr_));
    cleanup_free char *src = obi_test_path_in(f, "src"), *dest = obi_test_path_in(f, "dest");
    cleanup_node obi_node node = {0};
    assert_ok(obi_ingest_path(blobs, dirs, src, NULL, &node, err_ptr_));
    assert_ok(obi_materialize_node(blobs, dirs, &node, dest, err_ptr_));

    cleanup_free char *file = obi_test_path_in(f, "dest/file"),
                      *tool = obi_test_path_in(f, "dest/tool");
    struct stat fst, tst, local;
    assert_int_equal(stat(file, &fst), 0);
    assert_int_equal(stat(tool, &tst), 0);
    obi_digest d;
    obi_digest_of("file\n", 5, &d);
    cleanup_free char *local_path = NULL;
    assert_ok(blobs->ops->local_path(blobs, &d, &local_path, err_ptr_));
    assert_int_equal(stat(local_path, &local), 0);
    assert_int_equal(fst.st_ino, local.st_ino); /* linked */
    assert_int_equal(tst.st_nlink, 1);          /* executables are copied */
    assert_int_equal(tst.st_mode & 07777, 0555);
    obi_blob_service_free(blobs);
    obi_directory_service_free(dirs);
}

static time_t mtime_of(fixture *f, const char *rel)
{
    cleanup_free char *path = obi_test_path_in(f, rel);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mtime;
}

/* Materialized (build inputs): every entry has mtime 1, as Nix's store paths; an export keeps
 * the time it was written at. The digest is that of the same tree either way. */
static void test_materialize_sets_mtime_1_on_every_entry(void **state)
{
    fixture *f = *state;
    make_tree(f);
    cleanup_free char *store = obi_test_path_in(f, "store");
    obi_blob_service *blobs = NULL;
    obi_directory_service *dirs = NULL;
    assert_ok(obi_local_blob_service_open(store, &blobs, err_ptr_));
    assert_ok(obi_local_directory_service_open(store, &dirs, err_ptr_));
    cleanup_free char *src = obi_test_path_in(f, "src"), *dest = obi_test_path_in(f, "dest"),
                      *exported = obi_test_path_in(f, "exported");
    cleanup_node obi_node node = {0}, again = {0};
    assert_ok(obi_ingest_path(blobs, dirs, src, NULL, &node, err_ptr_));
    assert_ok(obi_materialize_node(blobs, dirs, &node, dest, err_ptr_));
    const char *entries[] = {"dest",      "dest/sub",       "dest/file",
                             "dest/tool", "dest/sub/empty", "dest/link"};
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        if (mtime_of(f, entries[i]) != 1)
            fail_msg("%s has mtime %lld", entries[i], (long long)mtime_of(f, entries[i]));
    assert_ok(obi_ingest_path(blobs, dirs, dest, NULL, &again, err_ptr_));
    assert_true(obi_digest_equal(&node.digest, &again.digest));
    assert_ok(obi_export_node(blobs, dirs, &node, exported, err_ptr_));
    assert_true(mtime_of(f, "exported/tool") > 1);
    obi_blob_service_free(blobs);
    obi_directory_service_free(dirs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, obi_test_store_setup, obi_test_store_teardown)
        T(test_export_round_trips_a_tree_with_modes),
        T(test_export_refuses_an_existing_destination),
        T(test_export_rejects_wrong_file_size_and_leaves_nothing),
        T(test_export_detects_a_blob_digest_mismatch_naming_the_path),
        T(test_export_refuses_entry_names_that_would_escape),
        T(test_export_rejects_a_directory_size_that_does_not_match),
        T(test_export_reports_an_absent_directory),
        T(test_materialize_hard_links_non_executables_from_the_local_store),
        T(test_materialize_sets_mtime_1_on_every_entry),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
