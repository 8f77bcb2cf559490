/*
 * The kept mount namespace without one mount (mount_ns.h), as root over tmpfs mounts in a
 * scratch dir: a spawn that joins it does not see the hidden mount and sees the others; it is
 * kept while our mount table stays, and made again when a mount came or went since, so a spawn
 * sees a mount made after the namespace was (a build's FUSE inputs) and not one unmounted, and
 * an idle namespace goes as soon as a mount does (no copy of it is held); the spawn goes back to
 * our working directory; a forked child gets no fd (it makes its own). The spawns are shells:
 * `test -e` answers by exit code.
 */
#include <dirent.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/mount_ns.h"
#include "ocibuild/process.h"
#include "test_helpers.h"

typedef struct fixture {
    char *dir;
    char *hidden; /* dir/hidden: a tmpfs with a file "marker" */
    char *later;  /* dir/later: mounted by the test that needs it */
    obi_mount_ns *ns;
} fixture;

static int mount_marked_tmpfs(const char *path)
{
    if (mkdir(path, 0755) < 0 || mount("tmpfs", path, "tmpfs", 0, "size=64k") < 0)
        return -1;
    cleanup_free char *marker = obi_path_join(path, "marker");
    return obi_write_file(marker, "x", 1, 0644, NULL);
}

static int setup(void **state)
{
    if (geteuid() != 0)
        return 0; /* each test skips */
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    f->hidden = obi_path_join(f->dir, "hidden");
    f->later = obi_path_join(f->dir, "later");
    if (mount_marked_tmpfs(f->hidden) < 0)
        return -1;
    f->ns = obi_mount_ns_new(f->hidden);
    *state = f;
    return f->ns ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (!f)
        return 0;
    obi_mount_ns_free(f->ns);
    umount2(f->later, MNT_DETACH);
    umount2(f->hidden, MNT_DETACH);
    obi_test_tmpdir_remove(f->dir);
    free(f->hidden);
    free(f->later);
    free(f);
    return 0;
}

/* The exit code of `sh -c script` run in the namespace (ns_fd) as a runtime call is. */
static int run_in(const fixture *f, int ns_fd, const char *script, char **output)
{
    char *const argv[] = {"/bin/sh", "-c", (char *)script, NULL};
    obi_spawn_options opts = OBI_SPAWN_OPTIONS_INIT;
    opts.hide_mount = f->hidden;
    opts.hide_mount_ns = ns_fd;
    int code = -1;
    cleanup_free char *out = NULL;
    assert_int_equal(obi_run_capture_opts(argv, &opts, 4096, &out, &code, NULL), 0);
    if (output)
        *output = steal_pointer(&out);
    return code;
}

static int sees(const fixture *f, int ns_fd, const char *dir)
{
    cleanup_free char *script = NULL;
    assert_true(asprintf(&script, "test -e '%s/marker'", dir) > 0);
    return run_in(f, ns_fd, script, NULL) == 0;
}

static ino_t ns_id(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return st.st_ino;
}

static void test_mount_ns_hides_the_mount_and_keeps_the_others(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    cleanup_free char *other = obi_path_join(f->dir, "other");
    assert_int_equal(mount_marked_tmpfs(other), 0);
    cleanup_close int fd = obi_mount_ns_join_fd(f->ns);
    assert_true(fd >= 0);
    assert_false(sees(f, fd, f->hidden));
    assert_true(sees(f, fd, other));
    assert_false(sees(f, -1, f->hidden)); /* a namespace made for the spawn: the same view */
    assert_true(sees(f, -1, other));
    /* our own mount table keeps it */
    struct stat st;
    cleanup_free char *marker = obi_path_join(f->hidden, "marker");
    assert_int_equal(stat(marker, &st), 0);
    assert_int_equal(umount2(other, MNT_DETACH), 0);
}

static void test_mount_ns_is_kept_while_the_mount_table_stays(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    cleanup_close int first = obi_mount_ns_join_fd(f->ns);
    for (int i = 0; i < 20; i++)
        assert_false(sees(f, first, f->hidden));
    cleanup_close int second = obi_mount_ns_join_fd(f->ns);
    assert_true(first >= 0 && second >= 0 && first != second);
    assert_int_equal(ns_id(first), ns_id(second));
    /* its mounts do not grow with the spawns that joined it */
    cleanup_free char *before = NULL, *after = NULL;
    assert_int_equal(run_in(f, second, "wc -l < /proc/self/mountinfo", &before), 0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(run_in(f, second, "true", NULL), 0);
    assert_int_equal(run_in(f, second, "wc -l < /proc/self/mountinfo", &after), 0);
    assert_string_equal(before, after);
}

static void test_mount_ns_follows_mounts_made_and_removed_after_it(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    cleanup_close int made = obi_mount_ns_join_fd(f->ns);
    assert_false(sees(f, made, f->later));
    assert_int_equal(mount_marked_tmpfs(f->later), 0);
    cleanup_close int after_mount = obi_mount_ns_join_fd(f->ns);
    assert_int_not_equal(ns_id(made), ns_id(after_mount));
    assert_true(sees(f, after_mount, f->later));
    assert_false(sees(f, after_mount, f->hidden));
    assert_int_equal(umount2(f->later, MNT_DETACH), 0);
    cleanup_close int after_unmount = obi_mount_ns_join_fd(f->ns);
    assert_false(sees(f, after_unmount, f->later));
}

/* How many fds of this process are mount namespaces (the kept one, and dups not closed). */
static int mount_ns_fds(void)
{
    int n = 0;
    cleanup_dir DIR *fds = opendir("/proc/self/fd");
    assert_non_null(fds);
    for (struct dirent *e; (e = readdir(fds));) {
        char link[64] = "";
        if (readlinkat(dirfd(fds), e->d_name, link, sizeof link - 1) > 0 &&
            !strncmp(link, "mnt:[", 5))
            n++;
    }
    return n;
}

static void test_mount_ns_idle_namespace_goes_with_a_change_of_mounts(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    assert_int_equal(mount_marked_tmpfs(f->later), 0);
    int fd = obi_mount_ns_join_fd(f->ns);
    assert_true(sees(f, fd, f->later));
    close(fd);
    assert_int_equal(mount_ns_fds(), 1); /* kept, holding a copy of the tmpfs */
    /* unmounted here, and no call comes: the watcher drops the namespace and its copy */
    assert_int_equal(umount2(f->later, MNT_DETACH), 0);
    for (int i = 0; i < 200 && mount_ns_fds() > 0; i++)
        usleep(10 * 1000);
    assert_int_equal(mount_ns_fds(), 0);
}

static void test_mount_ns_spawn_goes_back_to_the_working_directory(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    char saved[PATH_MAX];
    assert_non_null(getcwd(saved, sizeof saved));
    cleanup_close int fd = obi_mount_ns_join_fd(f->ns);
    assert_int_equal(chdir(f->dir), 0);
    cleanup_free char *out = NULL;
    int code = run_in(f, fd, "pwd -P", &out);
    assert_int_equal(chdir(saved), 0);
    assert_int_equal(code, 0);
    cleanup_free char *want = NULL;
    assert_true(asprintf(&want, "%s\n", f->dir) > 0);
    assert_string_equal(out, want);
}

static void test_mount_ns_forked_child_makes_its_own(void **state)
{
    fixture *f = *state;
    if (!f)
        skip();
    cleanup_close int fd = obi_mount_ns_join_fd(f->ns);
    assert_true(fd >= 0);
    pid_t child = fork();
    if (child == 0)
        _exit(obi_mount_ns_join_fd(f->ns) == -1 ? 0 : 1);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* The tests' mounts in a namespace of their own, private: no other process's mount on this
 * machine changes our table under a test (nor does a test's mount leak out). */
static int group_setup(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0;
    return unshare(CLONE_NEWNS) == 0 && mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) == 0
               ? 0
               : -1;
}

#define NS_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        NS_TEST(test_mount_ns_hides_the_mount_and_keeps_the_others),
        NS_TEST(test_mount_ns_is_kept_while_the_mount_table_stays),
        NS_TEST(test_mount_ns_follows_mounts_made_and_removed_after_it),
        NS_TEST(test_mount_ns_idle_namespace_goes_with_a_change_of_mounts),
        NS_TEST(test_mount_ns_spawn_goes_back_to_the_working_directory),
        NS_TEST(test_mount_ns_forked_child_makes_its_own),
    };
    return cmocka_run_group_tests_name("mount_ns", tests, group_setup, NULL);
}
