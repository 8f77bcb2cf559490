/*
 * Shared helpers for the unit tests (see test_helpers.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
