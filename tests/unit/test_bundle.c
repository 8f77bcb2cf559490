/*
 * Bundle directories: UUID naming, liveness lock (on .lock and on the directory), removal on
 * close, keep, and the sweep that removes crashed runs' leftovers but never a live bundle.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ocibuild/bundle.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "test_helpers.h"

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void test_bundle_uuid_is_version_4(void **state)
{
    (void)state;
    char a[37], b[37];
    assert_ok(obi_uuid_v4(a, err_ptr_));
    assert_ok(obi_uuid_v4(b, err_ptr_));
    assert_int_equal(strlen(a), 36);
    assert_int_equal(a[14], '4');
    assert_true(strchr("89ab", a[19]) != NULL);
    assert_string_not_equal(a, b);
}

static void test_bundle_close_removes_directory_and_contents(void **state)
{
    (void)state;
    char *root = obi_test_tmpdir();
    obi_bundle *bundle = NULL;
    assert_ok(obi_bundle_create(root, &bundle, err_ptr_));
    char *path = strdup(obi_bundle_path(bundle));
    assert_true(exists(path));
    assert_string_equal(strrchr(path, '/') + 1, obi_bundle_id(bundle));
    char *sub = obi_bundle_subpath(bundle, "root/etc");
    assert_ok(obi_mkdir_p(sub, 0755, err_ptr_));
    chmod(sub, 0555); /* read-only dirs must not stop removal */
    assert_ok(obi_bundle_close(bundle, err_ptr_));
    assert_false(exists(path));
    free(sub);
    free(path);
    obi_test_tmpdir_remove(root);
}

static void test_bundle_keep_leaves_directory(void **state)
{
    (void)state;
    char *root = obi_test_tmpdir();
    obi_bundle *bundle = NULL;
    assert_ok(obi_bundle_create(root, &bundle, err_ptr_));
    char *path = strdup(obi_bundle_path(bundle));
    obi_bundle_set_keep(bundle, true);
    assert_ok(obi_bundle_close(bundle, err_ptr_));
    assert_true(exists(path));
    free(path);
    obi_test_tmpdir_remove(root);
}

static void test_bundle_sweep_removes_only_unlocked_bundles(void **state)
{
    (void)state;
    char *root = obi_test_tmpdir();
    /* A child creates a bundle and dies without cleaning up: a crashed run. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        obi_bundle *b = NULL;
        if (obi_bundle_create(root, &b, NULL) < 0)
            _exit(1);
        (void)!write(fds[1], obi_bundle_path(b), strlen(obi_bundle_path(b)) + 1);
        _exit(0);
    }
    close(fds[1]);
    char dead[4096] = {0};
    assert_true(read(fds[0], dead, sizeof dead - 1) > 0);
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    assert_true(exists(dead));

    obi_bundle *live = NULL;
    assert_ok(obi_bundle_create(root, &live, err_ptr_));
    unsigned swept = 0;
    assert_ok(obi_bundle_sweep(root, NULL, NULL, NULL, NULL, &swept, err_ptr_));
    assert_int_equal(swept, 1);
    assert_false(exists(dead));
    assert_true(exists(obi_bundle_path(live)));
    assert_ok(obi_bundle_close(live, err_ptr_));
    obi_test_tmpdir_remove(root);
}

/* A live bundle whose .lock is gone (its owner's removal unlinks it first and is still walking
 * the rest): the directory itself is locked, so a sweep leaves it to its owner. Before, the
 * sweep took it for a crashed run's and raced the owner: both failed (concurrent builds whose
 * service start swept while another build removed its bundle). */
static void test_bundle_sweep_leaves_a_bundle_its_owner_is_removing(void **state)
{
    (void)state;
    char *root = obi_test_tmpdir();
    obi_bundle *live = NULL;
    assert_ok(obi_bundle_create(root, &live, err_ptr_));
    char *lock = obi_path_join(obi_bundle_path(live), ".lock");
    assert_int_equal(unlink(lock), 0);
    free(lock);
    unsigned swept = 7;
    assert_ok(obi_bundle_sweep(root, NULL, NULL, NULL, NULL, &swept, err_ptr_));
    assert_int_equal(swept, 0);
    assert_true(exists(obi_bundle_path(live)));
    char *path = strdup(obi_bundle_path(live));
    assert_ok(obi_bundle_close(live, err_ptr_));
    assert_false(exists(path));
    free(path);
    obi_test_tmpdir_remove(root);
}

static void test_bundle_sweep_leaves_kept_bundles(void **state)
{
    (void)state;
    char *root = obi_test_tmpdir();
    obi_bundle *bundle = NULL;
    assert_ok(obi_bundle_create(root, &bundle, err_ptr_));
    char *path = strdup(obi_bundle_path(bundle));
    obi_bundle_set_keep(bundle, true);
    assert_ok(obi_bundle_close(bundle, err_ptr_)); /* lock released, directory kept */
    unsigned swept = 7;
    assert_ok(obi_bundle_sweep(root, NULL, NULL, NULL, NULL, &swept, err_ptr_));
    assert_int_equal(swept, 0);
    assert_true(exists(path));
    free(path);
    obi_test_tmpdir_remove(root);
}

static void test_bundle_create_fails_clearly_on_unwritable_root(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_bundle *bundle = NULL;
    assert_fails_with(err, obi_bundle_create("/proc/self/nonexistent/x", &bundle, &err), -ENOENT,
                      "bundle root");
    assert_null(bundle);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bundle_uuid_is_version_4),
        cmocka_unit_test(test_bundle_close_removes_directory_and_contents),
        cmocka_unit_test(test_bundle_keep_leaves_directory),
        cmocka_unit_test(test_bundle_sweep_removes_only_unlocked_bundles),
        cmocka_unit_test(test_bundle_sweep_leaves_kept_bundles),
        cmocka_unit_test(test_bundle_sweep_leaves_a_bundle_its_owner_is_removing),
        cmocka_unit_test(test_bundle_create_fails_clearly_on_unwritable_root),
    };
    return cmocka_run_group_tests_name("bundle", tests, NULL, NULL);
}
