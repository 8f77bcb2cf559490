/*
 * Filesystem helpers (fs.h) not covered elsewhere: the top-directory placement hint is set
 * where the filesystem has inode flags, and is harmless where it has none; whole-file reads stop
 * at their bound.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <linux/fs.h>
#include <stdlib.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fs_mark_top_directory_sets_the_flag_where_there_is_one),
        cmocka_unit_test(test_fs_mark_top_directory_names_a_missing_path),
        cmocka_unit_test(test_fs_read_file_reads_up_to_max_len_and_refuses_more),

    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
