/*
 * Shared helpers for the cmocka unit tests: temporary directories that are removed even when a
 * test fails, paths to shared test data, and error assertions that print the message.
 */
#ifndef OCIBUILD_TEST_HELPERS_H
#define OCIBUILD_TEST_HELPERS_H

#include <errno.h>
#include <setjmp.h>
#include <string.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <protobuf-c/protobuf-c.h>
#include <sys/types.h>

#include "ocibuild/error.h"
#include "ocibuild/store.h"

/* Creates a fresh directory under $TMPDIR; returns its path (caller frees via
 * obi_test_tmpdir_remove). */
char *obi_test_tmpdir(void);
void obi_test_tmpdir_remove(char *path);
/* Path of a file in ../shared/data (from $OBI_SHARED_DATA); caller frees. */
char *obi_test_shared_data(const char *name);

/* A temporary directory and empty in-memory blob and directory services, for tests that ingest
 * or export trees. obi_test_store_setup/_teardown are cmocka setup/teardown functions. */
typedef struct obi_test_store_fixture {
    char *tmp;
    obi_blob_service *blobs;
    obi_directory_service *dirs;
} obi_test_store_fixture;
int obi_test_store_setup(void **state);
int obi_test_store_teardown(void **state);
/* tmp/rel (caller frees). */
char *obi_test_path_in(const obi_test_store_fixture *f, const char *rel);
/* Writes text to tmp/rel and sets exactly mode (whatever the umask). */
void obi_test_write_text(const obi_test_store_fixture *f, const char *rel, const char *text,
                         mode_t mode);

/* A deadline per test, so that a test that hangs fails by itself (and the tests after it are
 * not lost to the suite's timeout): cmocka setup/teardown functions that arm and disarm an
 * alarm of OBI_TEST_DEADLINE_S seconds ($OBI_TEST_DEADLINE_S overrides it). When it fires, the
 * process prints that the running test (the last "[ RUN ]" line) passed its deadline and aborts.
 * Tests with a setup of their own call obi_test_deadline_arm from it. */
#define OBI_TEST_DEADLINE_S 60
int obi_test_deadline_arm(void **state);
int obi_test_deadline_disarm(void **state);
#define obi_unit_test_with_deadline(f)                                                             \
    cmocka_unit_test_setup_teardown(f, obi_test_deadline_arm, obi_test_deadline_disarm)

/* A decoder of one protobuf message: 0, or negative with *err set. */
typedef int (*obi_test_decode_fn)(const uint8_t *data, size_t len, obi_error **err);
/* Driven by the .proto (protoc-c's descriptor of the message decode reads): for every field
 * reachable from desc through embedded messages, encodes a message that holds just that field
 * with a wire type its type does not allow, and, for string fields, one holding a NUL; asserts
 * that decode refuses each naming the field path ("a.b[0].c (field 3) at byte offset 4").
 * A field the decoder does not check fails this test, so no field can be added unchecked.
 * Returns the number of encodings tried. */
size_t obi_test_pb_every_field_is_checked(const ProtobufCMessageDescriptor *desc,
                                          obi_test_decode_fn decode);

/* Asserts r == 0; on failure prints the error message first. */
#define assert_ok(expr)                                                                            \
    do {                                                                                           \
        obi_error *_e = NULL;                                                                      \
        obi_error **err_ptr_ = &_e;                                                                \
        (void)err_ptr_;                                                                            \
        int _r = (expr);                                                                           \
        if (_r != 0)                                                                               \
            print_error("%s -> %d: %s\n", #expr, _r, _e ? _e->message : "(no message)");           \
        obi_error_free(_e);                                                                        \
        assert_int_equal(_r, 0);                                                                   \
    } while (0)

/* Asserts that expr (which must use `&err`) fails with code and a message containing needle. */
#define assert_fails_with(err_var, expr, code, needle)                                             \
    do {                                                                                           \
        err_var = NULL;                                                                            \
        int _r = (expr);                                                                           \
        if (_r != (code) && err_var)                                                               \
            print_error("got %d: %s\n", _r, (err_var)->message);                                   \
        assert_int_equal(_r, (code));                                                              \
        assert_non_null(err_var);                                                                  \
        if (!strstr((err_var)->message, (needle)))                                                 \
            print_error("message '%s' lacks '%s'\n", (err_var)->message, (needle));                \
        assert_non_null(strstr((err_var)->message, (needle)));                                     \
        obi_error_free(err_var);                                                                   \
        err_var = NULL;                                                                            \
    } while (0)

#endif
