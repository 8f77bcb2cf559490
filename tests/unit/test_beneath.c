/*
 * Paths beneath a directory (beneath.h): one table of behaviours, run twice, once with openat2
 * and once with the component walk that replaces it where openat2 is missing. Each case builds
 * the same small tree in a fresh directory, with symlinks pointing out of it (to a sibling
 * "outside" directory holding a secret) as a build would plant them.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/beneath.h"
#include "ocibuild/fs.h"
#include "test_helpers.h"

typedef struct tree {
    char *tmp;
    char *outside; /* tmp/outside: what symlinks point at */
    int root_fd;   /* tmp/root: the trusted directory */
} tree;

static void write_file(const char *path, const char *text)
{
    obi_error *e = NULL;
    assert_int_equal(obi_write_file(path, text, strlen(text), 0600, &e), 0);
}

/* root/a/b/file, root/a/file, root/a/out -> ../../outside, root/a/rel -> .., root/abs ->
 * tmp/outside (absolute), root/a/b/last -> file; outside/secret. */
static int tree_setup(void **state)
{
    tree *t = calloc(1, sizeof *t);
    t->tmp = obi_test_tmpdir();
    t->outside = obi_path_join(t->tmp, "outside");
    char *root = obi_path_join(t->tmp, "root");
    char path[4096];
    assert_int_equal(mkdir(t->outside, 0755), 0);
    snprintf(path, sizeof path, "%s/secret", t->outside);
    write_file(path, "secret");
    snprintf(path, sizeof path, "%s/a/b", root);
    assert_ok(obi_mkdir_p(path, 0755, err_ptr_));
    snprintf(path, sizeof path, "%s/a/b/file", root);
    write_file(path, "inside");
    snprintf(path, sizeof path, "%s/a/file", root);
    write_file(path, "plain");
    snprintf(path, sizeof path, "%s/a/out", root);
    assert_int_equal(symlink("../../outside", path), 0);
    snprintf(path, sizeof path, "%s/a/rel", root);
    assert_int_equal(symlink("..", path), 0);
    snprintf(path, sizeof path, "%s/abs", root);
    assert_int_equal(symlink(t->outside, path), 0);
    snprintf(path, sizeof path, "%s/a/b/last", root);
    assert_int_equal(symlink("file", path), 0);
    t->root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    assert_true(t->root_fd >= 0);
    free(root);
    *state = t;
    return 0;
}

static int tree_teardown(void **state)
{
    tree *t = *state;
    close(t->root_fd);
    free(t->outside);
    obi_test_tmpdir_remove(t->tmp);
    free(t);
    obi_beneath_force_fallback(false);
    return 0;
}

static int walk_setup(void **state)
{
    obi_beneath_force_fallback(true);
    return tree_setup(state);
}

static char *read_fd(int fd)
{
    static char buf[64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    assert_true(n >= 0);
    buf[n] = 0;
    return buf;
}

static void test_beneath_opens_a_file_below(void **state)
{
    tree *t = *state;
    int fd = -1;
    assert_ok(obi_beneath_open(t->root_fd, "a/b/file", O_RDONLY, 0, NULL, &fd, err_ptr_));
    assert_string_equal(read_fd(fd), "inside");
    close(fd);
}

static void test_beneath_refuses_a_symlink_on_the_way_naming_it(void **state)
{
    tree *t = *state;
    obi_error *err = NULL;
    int fd = -1;
    assert_fails_with(
        err, obi_beneath_open(t->root_fd, "a/out/secret", O_RDONLY, 0, "/nix/store", &fd, &err),
        -ELOOP, "/nix/store/a/out: is a symlink, not followed");
    assert_fails_with(err, obi_beneath_open(t->root_fd, "abs/secret", O_RDONLY, 0, NULL, &fd, &err),
                      -ELOOP, "abs: is a symlink");
    /* a symlink that stays inside is refused all the same */
    assert_fails_with(err,
                      obi_beneath_open(t->root_fd, "a/rel/a/file", O_RDONLY, 0, NULL, &fd, &err),
                      -ELOOP, "a/rel: is a symlink");
}

static void test_beneath_refuses_a_symlink_as_the_last_component(void **state)
{
    tree *t = *state;
    obi_error *err = NULL;
    int fd = -1;
    assert_fails_with(err, obi_beneath_open(t->root_fd, "a/b/last", O_RDONLY, 0, NULL, &fd, &err),
                      -ELOOP, "a/b/last: is a symlink");
    assert_fails_with(err, obi_beneath_open(t->root_fd, "a/out", O_PATH, 0, NULL, &fd, &err),
                      -ELOOP, "a/out: is a symlink");
    /* creating through it does not write the target either */
    assert_fails_with(
        err, obi_beneath_open(t->root_fd, "a/b/last", O_WRONLY | O_CREAT, 0644, NULL, &fd, &err),
        -ELOOP, "a/b/last");
}

static void test_beneath_refuses_unclean_paths(void **state)
{
    tree *t = *state;
    const char *bad[] = {"", "/a/file", "../root/a/file", "a//file", "a/./file", "a/b/..", "a/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        obi_error *err = NULL;
        int fd = -1;
        assert_fails_with(err, obi_beneath_open(t->root_fd, bad[i], O_RDONLY, 0, NULL, &fd, &err),
                          -EINVAL, "not a clean relative path");
        assert_false(obi_beneath_path_is_clean(bad[i]));
    }
    assert_true(obi_beneath_path_is_clean("a/b/file"));
    assert_true(obi_beneath_path_is_clean("..a/.b"));
}

static void test_beneath_names_a_missing_or_non_directory_component(void **state)
{
    tree *t = *state;
    obi_error *err = NULL;
    int fd = -1;
    assert_fails_with(err,
                      obi_beneath_open(t->root_fd, "a/missing/x", O_RDONLY, 0, "/out", &fd, &err),
                      -ENOENT, "/out/a/missing: No such file or directory");
    assert_fails_with(err, obi_beneath_open(t->root_fd, "a/file/x", O_RDONLY, 0, NULL, &fd, &err),
                      -ENOTDIR, "a/file: is not a directory");
}

static void test_beneath_open_parent_gives_the_holder_and_the_name(void **state)
{
    tree *t = *state;
    int fd = -1;
    const char *name = NULL;
    /* the last component may be a symlink: the caller looks at it without following */
    assert_ok(obi_beneath_open_parent(t->root_fd, "a/out", NULL, &fd, &name, err_ptr_));
    assert_string_equal(name, "out");
    struct stat st;
    assert_int_equal(fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW), 0);
    assert_true(S_ISLNK(st.st_mode));
    close(fd);
    /* one component: the holder is the start itself */
    assert_ok(obi_beneath_open_parent(t->root_fd, "abs", NULL, &fd, &name, err_ptr_));
    assert_string_equal(name, "abs");
    assert_int_equal(fstatat(fd, "a/b/file", &st, AT_SYMLINK_NOFOLLOW), 0);
    close(fd);
    obi_error *err = NULL;
    assert_fails_with(err,
                      obi_beneath_open_parent(t->root_fd, "a/out/secret", NULL, &fd, &name, &err),
                      -ELOOP, "a/out: is a symlink");
}

static void test_beneath_mkdirs_creates_and_never_follows(void **state)
{
    tree *t = *state;
    int fd = -1;
    assert_ok(obi_beneath_mkdirs(t->root_fd, "a/new/deeper", 0700, NULL, &fd, err_ptr_));
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    close(fd);
    assert_ok(obi_beneath_mkdirs(t->root_fd, "a/new/deeper", 0700, NULL, NULL, err_ptr_));
    obi_error *err = NULL;
    assert_fails_with(err, obi_beneath_mkdirs(t->root_fd, "a/out/planted", 0755, NULL, NULL, &err),
                      -ELOOP, "a/out: is a symlink");
    assert_fails_with(err, obi_beneath_mkdirs(t->root_fd, "abs", 0755, NULL, NULL, &err), -ELOOP,
                      "abs: is a symlink");
    assert_fails_with(err, obi_beneath_mkdirs(t->root_fd, "a/file/x", 0755, NULL, NULL, &err),
                      -ENOTDIR, "a/file");
    char path[4096];
    snprintf(path, sizeof path, "%s/planted", t->outside);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_beneath_creates_a_file_exclusively(void **state)
{
    tree *t = *state;
    int fd = -1;
    assert_ok(obi_beneath_open(t->root_fd, "a/b/new", O_WRONLY | O_CREAT | O_EXCL, 0640, NULL, &fd,
                               err_ptr_));
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
    obi_error *err = NULL;
    assert_fails_with(
        err,
        obi_beneath_open(t->root_fd, "a/b/new", O_WRONLY | O_CREAT | O_EXCL, 0640, NULL, &fd, &err),
        -EEXIST, "a/b/new");
}

#define BOTH(test)                                                                                 \
    cmocka_unit_test_setup_teardown(test, tree_setup, tree_teardown),                              \
        cmocka_unit_test_setup_teardown(test, walk_setup, tree_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_beneath_opens_a_file_below),
        BOTH(test_beneath_refuses_a_symlink_on_the_way_naming_it),
        BOTH(test_beneath_refuses_a_symlink_as_the_last_component),
        BOTH(test_beneath_refuses_unclean_paths),
        BOTH(test_beneath_names_a_missing_or_non_directory_component),
        BOTH(test_beneath_open_parent_gives_the_holder_and_the_name),
        BOTH(test_beneath_mkdirs_creates_and_never_follows),
        BOTH(test_beneath_creates_a_file_exclusively),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
