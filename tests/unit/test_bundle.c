/*
 * Bundle directories: UUID naming, liveness lock (on the directory, passed on with its
 * descriptor), removal on close, keep, and the sweep that removes crashed runs' leftovers but
 * never a live bundle.
 */
#include <fcntl.h>
#include <signal.h>
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

/* A bundle handed over: its owner forks a child that keeps the locked descriptor and
 * abandons its own handle (as `ocibuild build` does after its answer, docs/build.md "After the
 * answer"). The lock went with the descriptor, so a sweep leaves it to the child, which removes
 * it; the same child killed instead leaves it to the next sweep. */
static void test_bundle_sweep_leaves_a_bundle_handed_to_a_child(void **state)
{
    (void)state;
    char *root = obi_test_tmpdir();
    for (int killed = 0; killed <= 1; killed++) {
        obi_bundle *bundle = NULL;
        assert_ok(obi_bundle_create(root, &bundle, err_ptr_));
        char *path = strdup(obi_bundle_path(bundle));
        int go[2];
        assert_int_equal(pipe(go), 0);
        pid_t pid = fork();
        if (pid == 0) {
            char byte;
            close(go[1]);
            if (read(go[0], &byte, 1) != 1) /* the parent is done sweeping */
                _exit(1);
            _exit(obi_bundle_close(bundle, NULL) == 0 ? 0 : 1);
        }
        close(go[0]);
        obi_bundle_abandon(bundle);
        unsigned swept = 7;
        assert_ok(obi_bundle_sweep(root, NULL, NULL, NULL, NULL, &swept, err_ptr_));
        assert_int_equal(swept, 0);
        assert_true(exists(path));
        int status;
        if (killed) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            assert_true(exists(path));
            assert_ok(obi_bundle_sweep(root, NULL, NULL, NULL, NULL, &swept, err_ptr_));
            assert_int_equal(swept, 1);
        } else {
            assert_int_equal(write(go[1], "x", 1), 1);
            waitpid(pid, &status, 0);
            assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        close(go[1]);
        assert_false(exists(path));
        free(path);
    }
    obi_test_tmpdir_remove(root);
}

typedef struct emptied_seen {
    char *path;
    int calls;
    bool was_empty_dir;
} emptied_seen;

static void note_emptied(void *ctx)
{
    emptied_seen *seen = ctx;
    seen->calls++;
    struct stat st;
    char *sub = obi_path_join(seen->path, "root");
    seen->was_empty_dir = stat(seen->path, &st) == 0 && S_ISDIR(st.st_mode) && !exists(sub);
    free(sub);
}

/* The hook runs once, when only the (empty) directory is left; never for a kept bundle. */
static void test_bundle_close_calls_emptied_before_the_last_rmdir(void **state)
{
    (void)state;
    char *root = obi_test_tmpdir();
    for (int keep = 0; keep <= 1; keep++) {
        obi_bundle *bundle = NULL;
        assert_ok(obi_bundle_create(root, &bundle, err_ptr_));
        emptied_seen seen = {strdup(obi_bundle_path(bundle)), 0, false};
        char *sub = obi_bundle_subpath(bundle, "root/etc");
        assert_ok(obi_mkdir_p(sub, 0755, err_ptr_));
        obi_bundle_set_on_emptied(bundle, note_emptied, &seen);
        obi_bundle_set_keep(bundle, keep);
        assert_ok(obi_bundle_close(bundle, err_ptr_));
        assert_int_equal(seen.calls, keep ? 0 : 1);
        assert_true(keep || seen.was_empty_dir);
        assert_int_equal(exists(seen.path), keep);
        free(sub);
        free(seen.path);
    }
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

/* A recycler keeping one skeleton in a spare directory. */
typedef struct spare {
    char *path; /* where the skeleton is kept */
    int takes, gives;
} spare;

static int spare_take(void *ctx, const char *dest)
{
    spare *s = ctx;
    s->takes++;
    return rename(s->path, dest) == 0;
}

static int spare_give(void *ctx, const char *path)
{
    spare *s = ctx;
    s->gives++;
    return rename(path, s->path) == 0;
}

/* Closing a recycled bundle empties its skeleton directories, removes everything else (a
 * symlink named like a skeleton directory too, never followed) but its config.json and pid file
 * and gives the directory back, after the emptied hook; the next bundle takes it (same inode)
 * and starts with only those, and rewrites its config.json in place. */
static void test_bundle_recycles_its_skeleton_empty(void **state)
{
    (void)state;
    char *root = obi_test_tmpdir();
    char *outside = obi_test_tmpdir();
    static const char *const dirs[] = {"scratch", "inputs", "absent", NULL};
    spare s = {obi_path_join(root, ".spare"), 0, 0};
    obi_bundle_recycler recycler = {dirs, spare_take, spare_give, &s};
    obi_bundle *bundle = NULL;
    assert_ok(obi_bundle_create_recycled(root, &recycler, &bundle, err_ptr_));
    assert_int_equal(s.takes, 1); /* none to take yet: made */
    char *path = strdup(obi_bundle_path(bundle));
    char *deep = obi_path_join(path, "scratch/x/y");
    char *file = obi_path_join(path, "scratch/x/y/f");
    char *inputs = obi_path_join(path, "inputs");
    char *link = obi_path_join(path, "inputs/in");
    char *other = obi_path_join(path, "stray");
    char *fake = obi_path_join(path, "absent"); /* a skeleton name that is not a directory */
    char *kept_outside = obi_path_join(outside, "keep");
    assert_ok(obi_mkdir_p(deep, 0755, err_ptr_));
    assert_ok(obi_write_file(file, "x", 1, 0644, err_ptr_));
    assert_int_equal(mkdir(inputs, 0755), 0);
    assert_ok(obi_write_file(kept_outside, "x", 1, 0644, err_ptr_));
    assert_int_equal(symlink(outside, link), 0);
    assert_int_equal(symlink(outside, fake), 0);
    assert_ok(obi_write_file(other, "{}", 2, 0644, err_ptr_));
    json_t *config = json_object();
    assert_ok(obi_bundle_write_config(bundle, config, err_ptr_));
    char *config_path = obi_bundle_subpath(bundle, "config.json");
    struct stat st;
    assert_int_equal(stat(config_path, &st), 0);
    ino_t config_inode = st.st_ino;
    assert_int_equal(stat(path, &st), 0);
    ino_t inode = st.st_ino;
    emptied_seen seen = {strdup(path), 0, false};
    obi_bundle_set_on_emptied(bundle, note_emptied, &seen);
    assert_ok(obi_bundle_close(bundle, err_ptr_));
    assert_int_equal(seen.calls, 1);
    assert_int_equal(s.gives, 1);
    assert_false(exists(path));
    assert_true(exists(kept_outside));
    /* The spare holds scratch/ and inputs/, both empty, and nothing else. */
    char *listing = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&listing, &len);
    char *cmd = NULL;
    assert_true(asprintf(&cmd, "cd '%s' && find . | sort", s.path) > 0);
    FILE *p = popen(cmd, "r");
    char line[256];
    while (fgets(line, sizeof line, p))
        fputs(line, f);
    pclose(p);
    fclose(f);
    assert_string_equal(listing, ".\n./config.json\n./inputs\n./scratch\n");
    obi_bundle *again = NULL;
    assert_ok(obi_bundle_create_recycled(root, &recycler, &again, err_ptr_));
    assert_int_equal(s.takes, 2);
    assert_int_equal(stat(obi_bundle_path(again), &st), 0);
    assert_int_equal(st.st_ino, inode);
    assert_ok(obi_bundle_write_config(again, config, err_ptr_));
    free(config_path);
    config_path = obi_bundle_subpath(again, "config.json");
    assert_int_equal(stat(config_path, &st), 0);
    assert_int_equal(st.st_ino, config_inode);
    obi_bundle_abandon(again); /* (left for the tmpdir's removal) */
    json_decref(config);
    free(config_path);
    free(cmd);
    free(listing);
    free(seen.path);
    free(kept_outside);
    free(fake);
    free(other);
    free(link);
    free(inputs);
    free(file);
    free(deep);
    free(path);
    free(s.path);
    obi_test_tmpdir_remove(outside);
    obi_test_tmpdir_remove(root);
}

static void assert_owned_by_us(const char *path, mode_t mode)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(st.st_mode & 07777, mode);
}

/* Container root's host ids own a rootful bundle (and scratch/ the build user's) while it runs:
 * what they could leave in the kept files' places (a symlink, a hard link to a file of root's,
 * a FIFO, a file of their own) is removed when the skeleton is given back, the skeleton is
 * handed back to root first (0700, scratch/ 0755), and nothing planted is followed or written
 * through, then or by the next bundle's rewrite. A pooled skeleton not owned by root (an older
 * version's, or tampered with) is not used: the next bundle is a fresh directory. */
static void test_bundle_skeleton_never_keeps_what_the_build_planted(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* needs to hand the bundle to other ids, as a rootful build does */
    char *root = obi_test_tmpdir();
    char *outside = obi_test_tmpdir();
    static const char *const dirs[] = {"scratch", "inputs", NULL};
    spare s = {obi_path_join(root, ".spare"), 0, 0};
    obi_bundle_recycler recycler = {dirs, spare_take, spare_give, &s};
    obi_bundle *bundle = NULL;
    assert_ok(obi_bundle_create_recycled(root, &recycler, &bundle, err_ptr_));
    int fd = obi_bundle_fd(bundle);
    assert_int_equal(mkdirat(fd, "scratch", 0755), 0);
    assert_int_equal(mkdirat(fd, "inputs", 0755), 0);
    char *target = obi_path_join(outside, "target");
    char *linked = obi_path_join(outside, "linked");
    assert_ok(obi_write_file(target, "target", 6, 0644, err_ptr_));
    assert_ok(obi_write_file(linked, "linked", 6, 0644, err_ptr_));
    /* As the build's ids would: the bundle and scratch/ are theirs, and so is what they plant. */
    assert_int_equal(fchown(fd, 4242, 4242), 0);
    assert_int_equal(fchmod(fd, 0777), 0);
    assert_int_equal(fchownat(fd, "scratch", 4243, 4243, 0), 0);
    assert_int_equal(fchmodat(fd, "scratch", 02777, 0), 0);
    assert_int_equal(symlinkat(target, fd, "config.json"), 0);
    assert_int_equal(linkat(AT_FDCWD, linked, fd, "runtime.pid", 0), 0);
    char *path = strdup(obi_bundle_path(bundle));
    assert_ok(obi_bundle_close(bundle, err_ptr_));
    assert_int_equal(s.gives, 1);
    assert_owned_by_us(s.path, 0700);
    char *scratch = obi_path_join(s.path, "scratch");
    assert_owned_by_us(scratch, 0755);
    char *config = obi_path_join(s.path, "config.json");
    char *pid = obi_path_join(s.path, "runtime.pid");
    assert_false(exists(config));
    assert_false(exists(pid));
    struct stat st;
    assert_int_equal(stat(linked, &st), 0);
    assert_int_equal(st.st_nlink, 1);
    /* Planted while pooled (a FIFO, a file of theirs): the next bundle writes its config.json
     * without blocking or writing into theirs. */
    assert_int_equal(mkfifo(config, 0644), 0);
    assert_ok(obi_write_file(pid, "1", 1, 0644, err_ptr_));
    assert_int_equal(chown(pid, 4242, 4242), 0);
    assert_ok(obi_bundle_create_recycled(root, &recycler, &bundle, err_ptr_));
    json_t *empty = json_object();
    assert_ok(obi_bundle_write_config(bundle, empty, err_ptr_));
    char *config_now = obi_bundle_subpath(bundle, "config.json");
    assert_int_equal(lstat(config_now, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_ok(obi_bundle_close(bundle, err_ptr_));
    assert_int_equal(s.gives, 2);
    assert_int_equal(lstat(pid, &st), -1); /* theirs: removed on the way back */
    /* A pooled skeleton of theirs is never used. */
    assert_int_equal(chown(s.path, 4242, 4242), 0);
    assert_ok(obi_bundle_create_recycled(root, &recycler, &bundle, err_ptr_));
    assert_int_equal(s.takes, 3);
    assert_int_equal(fstat(obi_bundle_fd(bundle), &st), 0);
    assert_int_equal(st.st_uid, 0);
    assert_false(exists(s.path));
    char *entry = obi_bundle_subpath(bundle, "scratch");
    assert_false(exists(entry)); /* a fresh directory: nothing of the skeleton in it */
    obi_bundle_abandon(bundle);  /* (left for the tmpdir's removal) */
    char buf[16] = "";
    fd = open(target, O_RDONLY);
    assert_int_equal(read(fd, buf, sizeof buf), 6);
    close(fd);
    assert_string_equal(buf, "target");
    json_decref(empty);
    free(entry);
    free(config_now);
    free(pid);
    free(config);
    free(scratch);
    free(path);
    free(linked);
    free(target);
    free(s.path);
    obi_test_tmpdir_remove(outside);
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
        cmocka_unit_test(test_bundle_sweep_leaves_a_bundle_handed_to_a_child),
        cmocka_unit_test(test_bundle_close_calls_emptied_before_the_last_rmdir),
        cmocka_unit_test(test_bundle_recycles_its_skeleton_empty),
        cmocka_unit_test(test_bundle_skeleton_never_keeps_what_the_build_planted),
        cmocka_unit_test(test_bundle_create_fails_clearly_on_unwritable_root),
    };
    return cmocka_run_group_tests_name("bundle", tests, NULL, NULL);
}
