/*
 * Filesystem helpers (fs.h) not covered elsewhere: the top-directory placement hint is set
 * where the filesystem has inode flags, and is harmless where it has none; whole-file reads stop
 * at their bound; a rewrite in place reuses only a private file of ours and replaces, never
 * follows or writes through, anything planted in its place.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/fs.h"
#include "test_helpers.h"

static void test_fs_mark_top_directory_sets_the_flag_where_there_is_one(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    char *bundles = obi_path_join(dir, "bundles");
    assert_int_equal(mkdir(bundles, 0711), 0);
    assert_ok(obi_mark_top_directory(bundles, err_ptr_));
    assert_ok(obi_mark_top_directory(bundles, err_ptr_)); /* idempotent */
    /* Whether this filesystem takes the flag at all, tried by hand on another directory. */
    char *probe = obi_path_join(dir, "probe");
    assert_int_equal(mkdir(probe, 0711), 0);
    int probe_fd = open(probe, O_RDONLY | O_DIRECTORY);
    assert_true(probe_fd >= 0);
    int flags = 0;
    bool supported = ioctl(probe_fd, FS_IOC_GETFLAGS, &flags) == 0 &&
                     (flags |= FS_TOPDIR_FL, ioctl(probe_fd, FS_IOC_SETFLAGS, &flags) == 0);
    close(probe_fd);
    int fd = open(bundles, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    flags = 0;
    if (supported) {
        assert_int_equal(ioctl(fd, FS_IOC_GETFLAGS, &flags), 0);
        assert_true(flags & FS_TOPDIR_FL);
    } else {
        print_message("note: %s takes no top-directory flag; only checked that the hint is "
                      "harmless\n",
                      dir);
    }
    close(fd);
    free(probe);
    free(bundles);
    obi_test_tmpdir_remove(dir);
}

static void test_fs_mark_top_directory_names_a_missing_path(void **state)
{
    (void)state;
    obi_error *err = NULL;
    assert_fails_with(err, obi_mark_top_directory("/nonexistent/obi-bundles", &err), -ENOENT,
                      "/nonexistent/obi-bundles");
}

static void test_fs_read_file_reads_up_to_max_len_and_refuses_more(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    char *path = obi_path_join(dir, "f");
    /* sizes around the read chunk and the doubling points of the buffer */
    static const size_t sizes[] = {0, 1, 4094, 4095, 4096, 4097, 8191, 8192, 100000};
    char *data = malloc(100001);
    for (size_t i = 0; i <= 100000; i++)
        data[i] = (char)('a' + i % 26);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t size = sizes[i];
        assert_ok(obi_write_file(path, data, size, 0644, err_ptr_));
        char *text = NULL;
        size_t len = 0;
        assert_ok(obi_read_file(path, size, &text, &len, err_ptr_));
        assert_int_equal(len, size);
        assert_int_equal(text[len], 0);
        assert_memory_equal(text, data, size);
        free(text);
        obi_error *err = NULL;
        text = NULL;
        if (size > 0) {
            assert_fails_with(err, obi_read_file(path, size - 1, &text, &len, &err), -EFBIG,
                              "larger than");
            assert_null(text);
        }
    }
    free(data);
    free(path);
    obi_test_tmpdir_remove(dir);
}

static ino_t inode_of(int dirfd, const char *name)
{
    struct stat st;
    assert_int_equal(fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW), 0);
    return st.st_ino;
}

/* name in dirfd holds exactly text, as a regular file of ours, mode 0644, one link. */
static void assert_rewritten(int dirfd, const char *name, const char *text)
{
    struct stat st;
    assert_int_equal(fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(st.st_nlink, 1);
    assert_int_equal(st.st_uid, geteuid());
    char buf[64] = "";
    int fd = openat(dirfd, name, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, buf, sizeof buf - 1), (ssize_t)strlen(text));
    close(fd);
    assert_string_equal(buf, text);
}

static void test_fs_rewrite_reuses_a_private_file_in_place(void **state)
{
    (void)state;
    char *tmp = obi_test_tmpdir();
    int dir = open(tmp, O_PATH | O_DIRECTORY);
    mode_t saved = umask(077);
    assert_ok(obi_rewrite_file_at(dir, "f", "a longer text", 13, 0644, NULL, err_ptr_));
    umask(saved);
    assert_rewritten(dir, "f", "a longer text"); /* mode 0644 despite the umask */
    ino_t first = inode_of(dir, "f");
    assert_ok(obi_rewrite_file_at(dir, "f", "short", 5, 0644, NULL, err_ptr_));
    assert_rewritten(dir, "f", "short");
    assert_int_equal(inode_of(dir, "f"), first);
    assert_ok(obi_rewrite_file_at(dir, "f", "", 0, 0644, NULL, err_ptr_));
    assert_rewritten(dir, "f", "");
    assert_int_equal(inode_of(dir, "f"), first);
    close(dir);
    obi_test_tmpdir_remove(tmp);
}

/* Whoever still has the file open (read or mapped) never sees the next text: the file is made
 * new then. */
static void test_fs_rewrite_replaces_a_file_open_elsewhere(void **state)
{
    (void)state;
    char *tmp = obi_test_tmpdir();
    int dir = open(tmp, O_PATH | O_DIRECTORY);
    assert_ok(obi_rewrite_file_at(dir, "f", "first", 5, 0644, NULL, err_ptr_));
    ino_t first = inode_of(dir, "f");
    int reader = openat(dir, "f", O_RDONLY);
    assert_true(reader >= 0);
    assert_ok(obi_rewrite_file_at(dir, "f", "second", 6, 0644, NULL, err_ptr_));
    assert_rewritten(dir, "f", "second");
    assert_int_not_equal(inode_of(dir, "f"), first);
    char buf[16] = "";
    assert_int_equal(pread(reader, buf, sizeof buf - 1, 0), 5);
    assert_string_equal(buf, "first");
    close(reader);
    close(dir);
    obi_test_tmpdir_remove(tmp);
}

/* What may be planted in the file's place: each is removed (its target, other name or
 * contents untouched), the open never blocks, and the file is made new. */
static void test_fs_rewrite_never_follows_or_trusts_what_is_planted(void **state)
{
    (void)state;
    char *tmp = obi_test_tmpdir();
    int dir = open(tmp, O_PATH | O_DIRECTORY);
    assert_int_equal(mkdirat(dir, "outside", 0755), 0);
    int out = openat(dir, "outside", O_PATH | O_DIRECTORY);
    assert_ok(obi_rewrite_file_at(out, "target", "target", 6, 0644, NULL, err_ptr_));
    assert_ok(obi_rewrite_file_at(out, "linked", "linked", 6, 0644, NULL, err_ptr_));
    assert_ok(obi_rewrite_file_at(out, "kept", "kept", 4, 0644, NULL, err_ptr_));
    assert_int_equal(symlinkat("outside/target", dir, "symlink"), 0);
    assert_int_equal(linkat(out, "linked", dir, "hardlink", 0), 0);
    assert_int_equal(mkfifoat(dir, "fifo", 0644), 0);
    assert_int_equal(mkdirat(dir, "directory", 0755), 0);
    assert_int_equal(symlinkat("../outside", dir, "directory/escape"), 0);
    int fd = openat(dir, "loose", O_WRONLY | O_CREAT | O_EXCL, 0666);
    assert_true(fd >= 0);
    assert_int_equal(fchmod(fd, 0666), 0); /* ours, but writable by anyone */
    close(fd);
    const char *const planted[] = {"symlink", "hardlink", "fifo", "directory", "loose"};
    for (size_t i = 0; i < sizeof planted / sizeof *planted; i++) {
        assert_ok(obi_rewrite_file_at(dir, planted[i], "ours", 4, 0644, NULL, err_ptr_));
        assert_rewritten(dir, planted[i], "ours");
    }
    assert_rewritten(out, "target", "target");
    assert_rewritten(out, "linked", "linked"); /* one link again */
    assert_rewritten(out, "kept", "kept");
    if (geteuid() == 0) { /* another user's file, as container root's host ids would leave it */
        fd = openat(dir, "theirs", O_WRONLY | O_CREAT | O_EXCL, 0644);
        assert_true(fd >= 0);
        assert_int_equal(fchown(fd, 4242, 4242), 0);
        close(fd);
        assert_ok(obi_rewrite_file_at(dir, "theirs", "ours", 4, 0644, NULL, err_ptr_));
        assert_rewritten(dir, "theirs", "ours"); /* ours now: made new, not written into */
    }
    close(out);
    close(dir);
    obi_test_tmpdir_remove(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fs_mark_top_directory_sets_the_flag_where_there_is_one),
        cmocka_unit_test(test_fs_mark_top_directory_names_a_missing_path),
        cmocka_unit_test(test_fs_read_file_reads_up_to_max_len_and_refuses_more),
        cmocka_unit_test(test_fs_rewrite_reuses_a_private_file_in_place),
        cmocka_unit_test(test_fs_rewrite_replaces_a_file_open_elsewhere),
        cmocka_unit_test(test_fs_rewrite_never_follows_or_trusts_what_is_planted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
