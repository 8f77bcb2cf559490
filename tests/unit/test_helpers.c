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
#include "ocibuild/pb_wire.h"
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

/* ---- every field of a message is checked ---- */

#define PB_PATH_MAX 6

typedef struct pb_path {
    const ProtobufCFieldDescriptor *fields[PB_PATH_MAX];
    size_t n;
} pb_path;

/* A wire type that the last field of path may not have. */
static obi_pb_wire_type wrong_wire_type(const ProtobufCFieldDescriptor *f)
{
    switch (obi_pb_wire_type_of(f->type)) {
    case OBI_PB_LEN:
        return OBI_PB_VARINT;
    case OBI_PB_VARINT:
        return OBI_PB_I32; /* not LEN: a repeated varint may come packed */
    default:
        return OBI_PB_VARINT;
    }
}

/* Encodes path's fields nested in one another around the last one's key and `value`; returns
 * the length and sets *key_offset to where the last key is. */
static size_t encode_along(const pb_path *path, obi_pb_wire_type wire_type, const uint8_t *value,
                           size_t value_len, uint8_t *out, size_t *key_offset)
{
    uint8_t inner[256];
    size_t len = obi_pb_put_key(inner, path->fields[path->n - 1]->id, wire_type);
    memcpy(inner + len, value, value_len);
    len += value_len;
    size_t offset = 0;
    for (size_t i = path->n - 1; i-- > 0;) {
        uint8_t header[OBI_PB_LEN_HEADER_MAX];
        size_t h = obi_pb_put_len_header(header, path->fields[i]->id, len);
        memmove(inner + h, inner, len);
        memcpy(inner, header, h);
        len += h;
        offset += h;
    }
    memcpy(out, inner, len);
    *key_offset = offset;
    return len;
}

static void path_text(const pb_path *path, char *out, size_t size)
{
    size_t at = 0;
    out[0] = '\0';
    for (size_t i = 0; i < path->n && at < size; i++) {
        const ProtobufCFieldDescriptor *f = path->fields[i];
        int n = snprintf(out + at, size - at, "%s%s%s", i ? "." : "", f->name,
                         f->label == PROTOBUF_C_LABEL_REPEATED ? "[0]" : "");
        at += n > 0 ? (size_t)n : 0;
    }
}

static void expect_refused(const pb_path *path, obi_pb_wire_type wire_type, const uint8_t *value,
                           size_t value_len, const char *problem, obi_test_decode_fn decode)
{
    uint8_t data[256];
    size_t key_offset = 0;
    size_t len = encode_along(path, wire_type, value, value_len, data, &key_offset);
    char where[200], needle[300];
    path_text(path, where, sizeof where);
    snprintf(needle, sizeof needle, "%s (field %u) at byte offset %zu: %s", where,
             path->fields[path->n - 1]->id, key_offset, problem);
    obi_error *err = NULL;
    int r = decode(data, len, &err);
    if (r >= 0 || !err || !strstr(err->message, needle))
        print_error("%s: got %d '%s', expected '%s'\n", where, r, err ? err->message : "", needle);
    assert_true(r < 0);
    assert_non_null(err);
    assert_non_null(strstr(err->message, needle));
    obi_error_free(err);
}

static void walk_fields(const ProtobufCMessageDescriptor *desc, pb_path *path,
                        obi_test_decode_fn decode, size_t *tried)
{
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        path->fields[path->n++] = f;
        static const uint8_t zeros[8] = {0};
        obi_pb_wire_type wrong = wrong_wire_type(f);
        size_t width = wrong == OBI_PB_I32 ? 4 : wrong == OBI_PB_I64 ? 8 : 1;
        expect_refused(path, wrong, zeros, width, "wire type", decode);
        (*tried)++;
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            static const uint8_t nul[] = {3, 'a', '\0', 'b'};
            expect_refused(path, OBI_PB_LEN, nul, sizeof nul, "string contains NUL", decode);
            (*tried)++;
        }
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && path->n < PB_PATH_MAX)
            walk_fields(f->descriptor, path, decode, tried);
        path->n--;
    }
}

size_t obi_test_pb_every_field_is_checked(const ProtobufCMessageDescriptor *desc,
                                          obi_test_decode_fn decode)
{
    pb_path path = {.n = 0};
    size_t tried = 0;
    walk_fields(desc, &path, decode, &tried);
    return tried;
}
