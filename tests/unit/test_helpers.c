/*
 * Shared helpers for the unit tests (see test_helpers.h).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "test_helpers.h"

char *obi_test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *path = NULL;
    if (asprintf(&path, "%s/obi-test-XXXXXX", base && *base ? base : "/tmp") < 0)
        return NULL;
    if (!mkdtemp(path)) {
        free(path);
        return NULL;
    }
    return path;
}

void obi_test_tmpdir_remove(char *path)
{
    if (!path)
        return;
    obi_error *err = NULL;
    if (obi_rm_rf(path, &err) < 0) {
        fprintf(stderr, "cleanup: %s\n", err->message);
        obi_error_free(err);
    }
    free(path);
}

char *obi_test_shared_data(const char *name)
{
    const char *base = getenv("OBI_SHARED_DATA");
    char *path = NULL;
    if (asprintf(&path, "%s/%s", base && *base ? base : "../shared/data", name) < 0)
        return NULL;
    return path;
}

int obi_test_store_setup(void **state)
{
    obi_test_store_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->tmp = obi_test_tmpdir();
    assert_non_null(f->tmp);
    assert_ok(obi_memory_blob_service_new(&f->blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&f->dirs, err_ptr_));
    *state = f;
    return 0;
}

int obi_test_store_teardown(void **state)
{
    obi_test_store_fixture *f = *state;
    obi_blob_service_free(f->blobs);
    obi_directory_service_free(f->dirs);
    obi_test_tmpdir_remove(f->tmp);
    free(f);
    return 0;
}

char *obi_test_path_in(const obi_test_store_fixture *f, const char *rel)
{
    char *p = obi_path_join(f->tmp, rel);
    assert_non_null(p);
    return p;
}

void obi_test_write_text(const obi_test_store_fixture *f, const char *rel, const char *text,
                         mode_t mode)
{
    cleanup_free char *p = obi_test_path_in(f, rel);
    assert_ok(obi_write_file(p, text, strlen(text), mode, err_ptr_));
    assert_int_equal(chmod(p, mode), 0);
}

static void deadline_passed(int sig)
{
    (void)sig;
    static const char message[] = "\n[ DEADLINE ] the running test passed its deadline "
                                  "(OBI_TEST_DEADLINE_S): aborting\n";
    /* async-signal-safe only: the test may be stuck anywhere */
    if (write(STDERR_FILENO, message, sizeof message - 1) < 0) {
        /* nothing more to say */
    }
    abort();
}

int obi_test_deadline_arm(void **state)
{
    (void)state;
    const char *env = getenv("OBI_TEST_DEADLINE_S");
    unsigned seconds = env && *env ? (unsigned)strtoul(env, NULL, 10) : OBI_TEST_DEADLINE_S;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = deadline_passed;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarm(seconds);
    return 0;
}

int obi_test_deadline_disarm(void **state)
{
    (void)state;
    alarm(0);
    return 0;
}
