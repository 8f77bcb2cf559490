/*
 * The iterative tree walk (fs_walk.h) and the tree operations on it (fs.h): order and
 * callbacks, symlinks never followed, a directory moved mid-walk detected on the way up, the
 * depth limit, and a 100,000-level chain removed with a handful of descriptors (RLIMIT_NOFILE
 * lowered) on a thread with a small stack.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/fs.h"
#include "ocibuild/fs_walk.h"
#include "test_helpers.h"

#define DEEP_CHAIN 100000

/* Makes a chain of depth directories "d/d/d/..." below dir/name, with a file at the bottom. */
static void make_chain(const char *dir, const char *name, size_t depth)
{
    int fd = open(dir, O_PATH | O_DIRECTORY);
    assert_true(fd >= 0);
    const char *component = name;
    for (size_t i = 0; i < depth; i++) {
        assert_int_equal(mkdirat(fd, component, 0755), 0);
        int next = openat(fd, component, O_PATH | O_DIRECTORY | O_NOFOLLOW);
        assert_true(next >= 0);
        close(fd);
        fd = next;
        component = "d";
    }
    int file = openat(fd, "bottom", O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(file >= 0);
    close(file);
    close(fd);
}

typedef struct recorder {
    obi_buf log;
    const char *move_from; /* rename this path to move_to when entering depth move_at */
    const char *move_to;
    size_t move_at;
} recorder;

static int record_enter(void *ctx, const obi_walk_entry *e, obi_error **err)
{
    (void)err;
    recorder *rec = ctx;
    obi_buf_appendf(&rec->log, "+%s%s ", e->path, S_ISLNK(e->st->st_mode) ? "@" : "");
    if (rec->move_from && e->depth == rec->move_at)
        assert_int_equal(rename(rec->move_from, rec->move_to), 0);
    return 0;
}

static int record_leave(void *ctx, const obi_walk_entry *e, obi_error **err)
{
    (void)err;
    recorder *rec = ctx;
    obi_buf_appendf(&rec->log, "-%s ", e->path);
    return 0;
}

static void test_walk_visits_in_name_order_entering_and_leaving(void **state)
{
    (void)state;
    char *tmp = obi_test_tmpdir();
    char path[4096];
    snprintf(path, sizeof path, "%s/t/b/c", tmp);
    assert_ok(obi_mkdir_p(path, 0755, err_ptr_));
    snprintf(path, sizeof path, "%s/t/a", tmp);
    assert_ok(obi_write_file(path, "x", 1, 0644, err_ptr_));
    snprintf(path, sizeof path, "%s/t/l", tmp);
    assert_int_equal(symlink("b", path), 0); /* a symlink to a directory: not descended */
    int fd = open(tmp, O_PATH | O_DIRECTORY);
    recorder rec = {OBI_BUF_INIT, NULL, NULL, 0};
    obi_walk_options opts = {
        .enter = record_enter, .leave = record_leave, .sorted = true, .display = "T"};
    assert_ok(obi_walk(fd, "t", &opts, &rec, err_ptr_));
    assert_string_equal((char *)rec.log.data, "+T +T/a +T/b +T/b/c -T/b/c -T/b +T/l@ -T ");
    obi_buf_free(&rec.log);
    close(fd);
    obi_test_tmpdir_remove(tmp);
}

static void test_walk_detects_a_directory_moved_while_inside(void **state)
{
    (void)state;
    char *tmp = obi_test_tmpdir();
    char path[4096], from[4096], to[4096];
    snprintf(path, sizeof path, "%s/t/a/b/c", tmp);
    assert_ok(obi_mkdir_p(path, 0755, err_ptr_));
    /* when the walk is inside t/a/b (entering c), b moves to t/x: ".." of b is no longer a */
    snprintf(from, sizeof from, "%s/t/a/b", tmp);
    snprintf(to, sizeof to, "%s/t/x", tmp);
    int fd = open(tmp, O_PATH | O_DIRECTORY);
    recorder rec = {OBI_BUF_INIT, from, to, 3};
    obi_walk_options opts = {.enter = record_enter, .leave = record_leave, .sorted = true};
    obi_error *err = NULL;
    assert_fails_with(err, obi_walk(fd, "t", &opts, &rec, &err), -EAGAIN,
                      "moved while being walked");
    obi_buf_free(&rec.log);
    close(fd);
    obi_test_tmpdir_remove(tmp);
}

static void test_walk_refuses_trees_deeper_than_the_limit(void **state)
{
    (void)state;
    char *tmp = obi_test_tmpdir();
    make_chain(tmp, "t", 5);
    int fd = open(tmp, O_PATH | O_DIRECTORY);
    obi_walk_options opts = {.max_levels = 5, .display = "out"};
    assert_ok(obi_walk(fd, "t", &opts, NULL, err_ptr_));
    opts.max_levels = 4;
    obi_error *err = NULL;
    assert_fails_with(err, obi_walk(fd, "t", &opts, NULL, &err), -ELOOP,
                      "out: directories nested deeper than 4 levels");
    close(fd);
    obi_test_tmpdir_remove(tmp);
}

static void test_tree_operations_never_follow_symlinks(void **state)
{
    (void)state;
    char *tmp = obi_test_tmpdir();
    char path[4096], secret[4096];
    snprintf(secret, sizeof secret, "%s/secret", tmp);
    assert_ok(obi_write_file(secret, "s", 1, 0600, err_ptr_));
    snprintf(path, sizeof path, "%s/t/sub", tmp);
    assert_ok(obi_mkdir_p(path, 0700, err_ptr_));
    snprintf(path, sizeof path, "%s/t/sub/link", tmp);
    assert_int_equal(symlink(secret, path), 0);
    snprintf(path, sizeof path, "%s/t/sub/dirlink", tmp);
    assert_int_equal(symlink(tmp, path), 0);
    int fd = open(tmp, O_PATH | O_DIRECTORY);
    assert_ok(obi_make_tree_readable_at(fd, "t", NULL, err_ptr_));
    struct stat st;
    assert_int_equal(stat(secret, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    snprintf(path, sizeof path, "%s/t/sub", tmp);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755);
    assert_ok(obi_chown_tree_at(fd, "t", getuid(), getgid(), NULL, err_ptr_));
    assert_ok(obi_rm_rf_at(fd, "t", NULL, err_ptr_));
    assert_int_equal(stat(secret, &st), 0);
    assert_int_equal(access(path, F_OK), -1);
    close(fd);
    obi_test_tmpdir_remove(tmp);
}

/* The removal walk keeping its top: the directory stays with its inode and mode, everything
 * below it goes (a symlink to outside too, never followed); a top that is not a directory is
 * refused with nothing removed. */
static void test_empty_dir_keeps_the_top_and_removes_everything_below(void **state)
{
    (void)state;
    char *tmp = obi_test_tmpdir();
    char path[4096], secret[4096];
    snprintf(secret, sizeof secret, "%s/secret", tmp);
    assert_ok(obi_write_file(secret, "s", 1, 0600, err_ptr_));
    snprintf(path, sizeof path, "%s/t/sub/deeper", tmp);
    assert_ok(obi_mkdir_p(path, 0755, err_ptr_));
    snprintf(path, sizeof path, "%s/t/sub/deeper/f", tmp);
    assert_ok(obi_write_file(path, "x", 1, 0644, err_ptr_));
    snprintf(path, sizeof path, "%s/t/link", tmp);
    assert_int_equal(symlink(tmp, path), 0);
    snprintf(path, sizeof path, "%s/t", tmp);
    assert_int_equal(chmod(path, 0751), 0);
    struct stat before, after;
    assert_int_equal(stat(path, &before), 0);
    int fd = open(tmp, O_PATH | O_DIRECTORY);
    assert_ok(obi_empty_dir_at(fd, "t", NULL, err_ptr_));
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino);
    assert_int_equal(after.st_mode & 07777, 0751);
    assert_int_equal(after.st_nlink, 2); /* no subdirectory left */
    snprintf(path, sizeof path, "%s/t/link", tmp);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(access(secret, F_OK), 0);
    obi_error *err = NULL;
    assert_fails_with(err, obi_empty_dir_at(fd, "secret", NULL, &err), -ENOTDIR,
                      "empty secret: not a directory");
    assert_int_equal(access(secret, F_OK), 0);
    close(fd);
    obi_test_tmpdir_remove(tmp);
}

/* A temporary directory on tmpfs (/dev/shm) when there is one: on this VM's ext4 (mounted with
 * online discard) making and removing 100,000 directories takes ~25 s, on tmpfs ~2 s. */
static char *fast_tmpdir(void)
{
    char *dir = strdup("/dev/shm/obi-test-XXXXXX");
    if (dir && mkdtemp(dir))
        return dir;
    free(dir);
    return obi_test_tmpdir();
}

typedef struct removal {
    const char *path;
    int r;
    char message[256];
} removal;

static void *remove_on_small_stack(void *arg)
{
    removal *job = arg;
    obi_error *err = NULL;
    job->r = obi_rm_rf(job->path, &err);
    if (err)
        snprintf(job->message, sizeof job->message, "%s", err->message);
    obi_error_free(err);
    return NULL;
}

static void test_rm_rf_removes_a_100000_level_chain_with_few_fds_and_a_small_stack(void **state)
{
    (void)state;
    char *tmp = fast_tmpdir();
    make_chain(tmp, "deep", DEEP_CHAIN);
    /* read-only directories on the way must not stop removal */
    int fd = open(tmp, O_PATH | O_DIRECTORY);
    assert_int_equal(fchmodat(fd, "deep", 0555, 0), 0);
    close(fd);
    struct rlimit saved, few = {16, 16};
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    few.rlim_max = saved.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &few), 0);
    char *deep = obi_path_join(tmp, "deep");
    removal job = {deep, 1, ""};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* a recursion would need ~100 bytes of stack per level at the very least: 10 MB here */
    pthread_attr_setstacksize(&attr, 512 << 10);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, &attr, remove_on_small_stack, &job), 0);
    pthread_join(thread, NULL);
    pthread_attr_destroy(&attr);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    if (job.r != 0)
        print_error("obi_rm_rf: %s\n", job.message);
    assert_int_equal(job.r, 0);
    assert_int_equal(access(deep, F_OK), -1);
    free(deep);
    obi_test_tmpdir_remove(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_visits_in_name_order_entering_and_leaving),
        cmocka_unit_test(test_walk_detects_a_directory_moved_while_inside),
        cmocka_unit_test(test_walk_refuses_trees_deeper_than_the_limit),
        cmocka_unit_test(test_tree_operations_never_follow_symlinks),
        cmocka_unit_test(test_empty_dir_keeps_the_top_and_removes_everything_below),
        cmocka_unit_test(test_rm_rf_removes_a_100000_level_chain_with_few_fds_and_a_small_stack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
