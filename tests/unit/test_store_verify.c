/*
 * The store's consistency check on a real on-disk store: a clean store verifies clean (and a
 * memory store too); then each kind of damage a crash, a disk or a hand could do is made by
 * hand and must be reported naming the faulty object: a blob file whose contents changed, a
 * blob file gone, a directory row whose bytes changed, a child directory row gone. A service
 * that cannot list is refused.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/node.h"
#include "ocibuild/store.h"
#include "ocibuild/store_backend.h"
#include "ocibuild/store_verify.h"
#include "test_helpers.h"

typedef struct fixture {
    char *tmp;
    char *root;
    obi_store store;
    obi_digest leaf_blob; /* the file "leaf" in sub/ */
    obi_digest sub_dir;   /* sub/ */
    obi_digest root_dir;  /* the top directory */
    char faults[8][400];  /* "kind hex: problem" */
    bool damaged[8];      /* the fault's damaged flag */
    size_t n_faults;
} fixture;

static obi_digest put_blob(fixture *f, const char *text)
{
    obi_digest d;
    assert_ok(obi_blob_put_bytes(f->store.blobs, text, strlen(text), &d, err_ptr_));
    return d;
}

/* top/ = {file "readme", sub/ = {file "leaf"}} */
static void put_tree(fixture *f)
{
    f->leaf_blob = put_blob(f, "leaf contents");
    obi_digest readme = put_blob(f, "readme contents");
    cleanup_directory obi_directory *sub = obi_directory_new();
    obi_node node = {0};
    assert_ok(obi_node_init_file(&node, "leaf", 4, &f->leaf_blob, 13, false));
    assert_ok(obi_directory_add(sub, &node));
    obi_node_clear(&node);
    assert_ok(obi_directory_digest(sub, &f->sub_dir, err_ptr_));
    cleanup_directory obi_directory *top = obi_directory_new();
    assert_ok(obi_node_init_directory(&node, "sub", 3, &f->sub_dir, obi_directory_size(sub)));
    assert_ok(obi_directory_add(top, &node));
    obi_node_clear(&node);
    assert_ok(obi_node_init_file(&node, "readme", 6, &readme, 15, false));
    assert_ok(obi_directory_add(top, &node));
    obi_node_clear(&node);
    cleanup_directory_putter obi_directory_putter *p = NULL;
    assert_ok(obi_directory_open_put(f->store.directories, &p, err_ptr_));
    assert_ok(obi_directory_put(p, sub, NULL, err_ptr_));
    assert_ok(obi_directory_put(p, top, NULL, err_ptr_));
    assert_ok(obi_directory_putter_finish(p, &f->root_dir, err_ptr_));
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->tmp = obi_test_tmpdir();
    f->root = obi_path_join(f->tmp, "store");
    assert_ok(obi_local_blob_service_open(f->root, &f->store.blobs, err_ptr_));
    assert_ok(obi_local_directory_service_open(f->root, &f->store.directories, err_ptr_));
    put_tree(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    obi_blob_service_free(f->store.blobs);
    obi_directory_service_free(f->store.directories);
    obi_test_tmpdir_remove(f->tmp);
    free(f->root);
    free(f);
    return 0;
}

static int record_fault(const obi_store_fault *fault, void *ctx, obi_error **err)
{
    (void)err;
    fixture *f = ctx;
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&fault->digest, hex);
    if (f->n_faults < 8) {
        f->damaged[f->n_faults] = fault->damaged;
        snprintf(f->faults[f->n_faults], sizeof f->faults[0], "%s %s: %s",
                 obi_store_object_kind_name(fault->kind), hex, fault->problem);
    }
    f->n_faults++;
    return 0;
}

static obi_store_verify_stats verify(fixture *f)
{
    obi_store_verify_stats stats;
    f->n_faults = 0;
    assert_ok(obi_store_verify(&f->store, record_fault, f, &stats, err_ptr_));
    assert_int_equal(stats.faults, f->n_faults);
    return stats;
}

/* The one fault reported names the object (kind and digest) and says `problem`. */
static void assert_one_fault(fixture *f, const char *kind, const obi_digest *digest,
                             const char *problem)
{
    assert_int_equal(f->n_faults, 1);
    char hex[OBI_DIGEST_HEX_LEN + 1], prefix[100];
    obi_digest_to_hex(digest, hex);
    snprintf(prefix, sizeof prefix, "%s %s: ", kind, hex);
    if (strncmp(f->faults[0], prefix, strlen(prefix)) != 0 || !strstr(f->faults[0], problem))
        print_error("fault '%s' is not '%s...%s...'\n", f->faults[0], prefix, problem);
    assert_int_equal(strncmp(f->faults[0], prefix, strlen(prefix)), 0);
    assert_non_null(strstr(f->faults[0], problem));
}

static char *blob_file(const fixture *f, const obi_digest *d)
{
    char hex[OBI_DIGEST_HEX_LEN + 1], rel[100];
    obi_digest_to_hex(d, hex);
    snprintf(rel, sizeof rel, "blobs/%.2s/%s", hex, hex);
    return obi_path_join(f->root, rel);
}

/* Runs SQL with one digest bound as ?1 on the store's database (another connection). */
static void sql_on_row(const fixture *f, const char *sql, const obi_digest *d)
{
    cleanup_free char *path = obi_path_join(f->root, "directories.sqlite");
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(stmt, 1, d->bytes, OBI_DIGEST_LEN, SQLITE_STATIC),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

static void test_store_verify_clean_store_has_no_fault(void **state)
{
    fixture *f = *state;
    obi_store_verify_stats stats = verify(f);
    assert_int_equal(f->n_faults, 0);
    assert_int_equal(stats.blobs, 2);
    assert_int_equal(stats.blob_bytes, 13 + 15);
    assert_int_equal(stats.directories, 2);
}

static void test_store_verify_names_a_blob_whose_contents_changed(void **state)
{
    fixture *f = *state;
    cleanup_free char *path = blob_file(f, &f->leaf_blob);
    assert_int_equal(chmod(path, 0644), 0);
    assert_ok(obi_write_file(path, "leaf CONTENTS", 13, 0644, err_ptr_));
    verify(f);
    /* the blob, and nothing else: the directory still names the right digest and size */
    assert_int_equal(f->n_faults, 2);
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&f->leaf_blob, hex);
    assert_non_null(strstr(f->faults[0], "blob "));
    assert_non_null(strstr(f->faults[0], hex));
    assert_non_null(strstr(f->faults[0], "hash"));
    /* and sub/, whose file it was, no longer has it */
    assert_non_null(strstr(f->faults[1], "file \"leaf\""));
    /* the blob is damaged (--repair removes it); sub/ itself is not */
    assert_true(f->damaged[0]);
    assert_false(f->damaged[1]);
}

static void test_store_verify_names_the_directory_whose_blob_is_gone(void **state)
{
    fixture *f = *state;
    cleanup_free char *path = blob_file(f, &f->leaf_blob);
    assert_int_equal(unlink(path), 0);
    verify(f);
    assert_one_fault(f, "directory", &f->sub_dir, "file \"leaf\"");
}

static void test_store_verify_names_a_directory_whose_bytes_changed(void **state)
{
    fixture *f = *state;
    sql_on_row(f, "UPDATE directories SET data = x'0a00' WHERE digest = ?1", &f->sub_dir);
    verify(f);
    /* sub/ itself, then top/, whose child it no longer is */
    assert_int_equal(f->n_faults, 2);
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&f->sub_dir, hex);
    assert_non_null(strstr(f->faults[0], hex));
    assert_non_null(strstr(f->faults[1], "child directory \"sub\""));
    assert_true(f->damaged[0]);
    assert_false(f->damaged[1]);
}

static void test_store_verify_names_the_parent_of_a_missing_directory(void **state)
{
    fixture *f = *state;
    sql_on_row(f, "DELETE FROM directories WHERE digest = ?1", &f->sub_dir);
    verify(f);
    assert_one_fault(f, "directory", &f->root_dir, "child directory \"sub\"");
}

static void test_store_verify_memory_store_is_clean_too(void **state)
{
    (void)state;
    fixture f = {0};
    assert_ok(obi_memory_blob_service_new(&f.store.blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&f.store.directories, err_ptr_));
    put_tree(&f);
    obi_store_verify_stats stats = verify(&f);
    assert_int_equal(f.n_faults, 0);
    assert_int_equal(stats.directories, 2);
    obi_blob_service_free(f.store.blobs);
    obi_directory_service_free(f.store.directories);
}

static void unlistable_free(obi_blob_service *svc)
{
    free(svc);
}

static void test_store_verify_refuses_a_store_that_cannot_list(void **state)
{
    fixture *f = *state;
    static const struct obi_blob_service_ops ops = {.free = unlistable_free};
    obi_blob_service *unlistable = calloc(1, sizeof *unlistable);
    unlistable->ops = &ops;
    obi_store store = {unlistable, f->store.directories};
    obi_store_verify_stats stats;
    obi_error *err = NULL;
    assert_fails_with(err, obi_store_verify(&store, NULL, NULL, &stats, &err), -ENOTSUP,
                      "cannot list");
    obi_blob_service_free(unlistable);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_verify_clean_store_has_no_fault, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_verify_names_a_blob_whose_contents_changed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_verify_names_the_directory_whose_blob_is_gone,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_verify_names_a_directory_whose_bytes_changed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_verify_names_the_parent_of_a_missing_directory,
                                        setup, teardown),
        cmocka_unit_test(test_store_verify_memory_store_is_clean_too),
        cmocka_unit_test_setup_teardown(test_store_verify_refuses_a_store_that_cannot_list, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("store_verify", tests, NULL, NULL);
}
