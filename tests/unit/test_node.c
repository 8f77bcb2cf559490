/*
 * castore nodes and directories: every validation rule (accepted and refused), the canonical
 * encoding against byte arrays written by hand from the protobuf wire format (independent of
 * protobuf-c), digests checked against b3sum, recursive sizes and their saturation, decoding
 * errors with offsets, the node_pb conversions and the JSON mapping.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/json_util.h"
#include "ocibuild/node.h"
#include "ocibuild/node_pb.h"
#include "../../src/castore/node_internal.h"
#include "test_helpers.h"

#define REP4(x) x, x, x, x
#define REP32(x) REP4(x), REP4(x), REP4(x), REP4(x), REP4(x), REP4(x), REP4(x), REP4(x)

static obi_digest digest_filled(uint8_t byte)
{
    obi_digest d;
    memset(d.bytes, byte, sizeof d.bytes);
    return d;
}

static void add_directory(obi_directory *dir, const char *name, uint8_t fill, uint64_t size)
{
    cleanup_node obi_node n = {0};
    obi_digest d = digest_filled(fill);
    assert_int_equal(obi_node_init_directory(&n, name, strlen(name), &d, size), 0);
    assert_int_equal(obi_directory_add(dir, &n), 0);
}

static void add_file(obi_directory *dir, const char *name, uint8_t fill, uint64_t size, bool x)
{
    cleanup_node obi_node n = {0};
    obi_digest d = digest_filled(fill);
    assert_int_equal(obi_node_init_file(&n, name, strlen(name), &d, size, x), 0);
    assert_int_equal(obi_directory_add(dir, &n), 0);
}

static void add_symlink(obi_directory *dir, const char *name, const char *target)
{
    cleanup_node obi_node n = {0};
    assert_int_equal(obi_node_init_symlink(&n, name, strlen(name), target, strlen(target)), 0);
    assert_int_equal(obi_directory_add(dir, &n), 0);
}

/* The example directory: a/ (size 3), b (5 bytes, executable), c (empty), d -> b. */
static obi_directory *example_directory(void)
{
    obi_directory *dir = obi_directory_new();
    assert_non_null(dir);
    add_directory(dir, "a", 0x11, 3);
    add_file(dir, "b", 0x22, 5, true);
    add_file(dir, "c", 0x33, 0, false);
    add_symlink(dir, "d", "b");
    return dir;
}

/* Written by hand from the wire format: key = field << 3 | wire type. */
/* clang-format off */
static const uint8_t EXAMPLE_BYTES[] = {
    0x0a, 39,                   /* directories[0]: field 1, LEN 39 */
    0x0a, 1, 'a',               /*   name */
    0x12, 32, REP32(0x11),      /*   digest */
    0x18, 3,                    /*   size */
    0x12, 41,                   /* files[0]: field 2, LEN 41 */
    0x0a, 1, 'b',
    0x12, 32, REP32(0x22),
    0x18, 5,                    /*   size */
    0x20, 1,                    /*   executable */
    0x12, 37,                   /* files[1]: LEN 37 (size 0 and executable false omitted) */
    0x0a, 1, 'c',
    0x12, 32, REP32(0x33),
    0x1a, 6,                    /* symlinks[0]: field 3, LEN 6 */
    0x0a, 1, 'd',
    0x12, 1, 'b',               /*   target */
};
/* clang-format on */
/* `b3sum` of EXAMPLE_BYTES written to a file. */
static const char EXAMPLE_B3SUM[] =
    "06669383aecae5ee9319a21d71c44cfda712a3bfce235a7664034fa8b24a5d25";
static const char EMPTY_B3[] = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

static void assert_node_invalid(const obi_node *n, const char *needle)
{
    obi_error *err = NULL;
    assert_fails_with(err, obi_node_validate(n, &err), -EINVAL, needle);
}

static void assert_directory_invalid(const obi_directory *dir, const char *needle)
{
    obi_error *err = NULL;
    assert_fails_with(err, obi_directory_validate(dir, &err), -EINVAL, needle);
}

/* ---- names --------------------------------------------------------------------------------- */

static void test_name_accepts_valid_names(void **state)
{
    (void)state;
    uint8_t long_name[255];
    memset(long_name, 'x', sizeof long_name);
    assert_ok(obi_name_validate(long_name, 255, "t", err_ptr_));
    assert_ok(obi_name_validate((const uint8_t *)"a", 1, "t", err_ptr_));
    assert_ok(obi_name_validate((const uint8_t *)"...", 3, "t", err_ptr_));
    assert_ok(obi_name_validate((const uint8_t *)".a", 2, "t", err_ptr_));
    assert_ok(obi_name_validate((const uint8_t *)"\xff\x01 ", 3, "t", err_ptr_));
}

static void test_name_rejects_empty(void **state)
{
    (void)state;
    obi_error *err = NULL;
    assert_fails_with(err, obi_name_validate((const uint8_t *)"", 0, "entry", &err), -EINVAL,
                      "entry: name is empty");
}

static void test_name_rejects_256_bytes(void **state)
{
    (void)state;
    obi_error *err = NULL;
    uint8_t name[256];
    memset(name, 'x', sizeof name);
    assert_fails_with(err, obi_name_validate(name, 256, "entry", &err), -EINVAL,
                      "name is 256 bytes, longer than 255");
}

static void test_name_rejects_dot_and_dotdot(void **state)
{
    (void)state;
    obi_error *err = NULL;
    assert_fails_with(err, obi_name_validate((const uint8_t *)".", 1, "e", &err), -EINVAL,
                      "e: name is \".\"");
    assert_fails_with(err, obi_name_validate((const uint8_t *)"..", 2, "e", &err), -EINVAL,
                      "e: name is \"..\"");
}

static void test_name_rejects_slash(void **state)
{
    (void)state;
    obi_error *err = NULL;
    assert_fails_with(err, obi_name_validate((const uint8_t *)"a/b", 3, "e", &err), -EINVAL,
                      "name contains '/' at offset 1");
    assert_fails_with(err, obi_name_validate((const uint8_t *)"/", 1, "e", &err), -EINVAL,
                      "name contains '/'");
}

static void test_name_rejects_nul(void **state)
{
    (void)state;
    obi_error *err = NULL;
    assert_fails_with(err, obi_name_validate((const uint8_t *)"ab\0c", 4, "e", &err), -EINVAL,
                      "name contains NUL at offset 2");
}

static void test_node_validate_names_the_node(void **state)
{
    (void)state;
    cleanup_node obi_node n = {0};
    obi_digest d = digest_filled(1);
    assert_int_equal(obi_node_init_file(&n, "a/b", 3, &d, 0, false), 0);
    assert_node_invalid(&n, "file node \"a/b\": name contains '/'");
    assert_int_equal(obi_node_set_name(&n, "ok", 2), 0);
    assert_ok(obi_node_validate(&n, err_ptr_));
    /* Unprintable bytes are escaped in messages. */
    assert_int_equal(obi_node_set_name(&n, "x\n\0", 3), 0);
    assert_node_invalid(&n, "file node \"x\\x0a\\x00\": name contains NUL");
}

static void test_node_validate_rejects_unknown_kind(void **state)
{
    (void)state;
    cleanup_node obi_node n = {0};
    assert_int_equal(obi_node_set_name(&n, "a", 1), 0);
    n.kind = 7;
    assert_node_invalid(&n, "invalid node kind 7");
}

/* ---- symlink targets ----------------------------------------------------------------------- */

static void test_symlink_target_accepts_1_and_4095_bytes(void **state)
{
    (void)state;
    cleanup_node obi_node n = {0};
    assert_int_equal(obi_node_init_symlink(&n, "l", 1, "/", 1), 0);
    assert_ok(obi_node_validate(&n, err_ptr_));
    cleanup_free char *t = malloc(4095);
    memset(t, 'a', 4095);
    assert_int_equal(obi_bytes_set(&n.target, t, 4095), 0);
    assert_ok(obi_node_validate(&n, err_ptr_));
}

static void test_symlink_target_rejects_empty(void **state)
{
    (void)state;
    cleanup_node obi_node n = {0};
    assert_int_equal(obi_node_init_symlink(&n, "l", 1, "", 0), 0);
    assert_node_invalid(&n, "symlink node \"l\": symlink target is empty");
}

static void test_symlink_target_rejects_4096_bytes(void **state)
{
    (void)state;
    cleanup_node obi_node n = {0};
    cleanup_free char *t = malloc(4096);
    memset(t, 'a', 4096);
    assert_int_equal(obi_node_init_symlink(&n, "l", 1, t, 4096), 0);
    assert_node_invalid(&n, "symlink target is 4096 bytes, longer than 4095");
}

static void test_symlink_target_rejects_nul(void **state)
{
    (void)state;
    cleanup_node obi_node n = {0};
    assert_int_equal(obi_node_init_symlink(&n, "l", 1, "a\0b", 3), 0);
    assert_node_invalid(&n, "symlink target contains NUL at offset 1");
}

/* ---- directories: order, uniqueness -------------------------------------------------------- */

static void test_directory_validate_accepts_example_and_empty(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = example_directory();
    assert_ok(obi_directory_validate(dir, err_ptr_));
    cleanup_directory obi_directory *empty = obi_directory_new();
    assert_ok(obi_directory_validate(empty, err_ptr_));
}

static void test_directory_rejects_invalid_entry_name(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_directory(dir, "foo/", 1, 0);
    assert_directory_invalid(dir, "directory entry \"foo/\": name contains '/'");
    cleanup_directory obi_directory *d2 = obi_directory_new();
    add_file(d2, "..", 1, 0, false);
    assert_directory_invalid(d2, "file entry \"..\": name is \"..\"");
    cleanup_directory obi_directory *d3 = obi_directory_new();
    add_symlink(d3, "", "x");
    assert_directory_invalid(d3, "symlink entry \"\": name is empty");
}

static void test_directory_rejects_invalid_symlink_target(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_symlink(dir, "l", "");
    assert_directory_invalid(dir, "symlink entry \"l\": symlink target is empty");
}

static void test_directory_rejects_unsorted_directories(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_directory(dir, "b", 1, 0);
    add_directory(dir, "a", 1, 0);
    assert_directory_invalid(dir, "directories: \"a\" is not sorted after \"b\"");
}

static void test_directory_rejects_unsorted_files(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_file(dir, "a", 1, 0, false);
    add_file(dir, "c", 1, 0, false);
    add_file(dir, "b", 1, 0, false);
    assert_directory_invalid(dir, "files: \"b\" is not sorted after \"c\"");
}

static void test_directory_rejects_unsorted_symlinks(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_symlink(dir, "ab", "t");
    add_symlink(dir, "a", "t");
    assert_directory_invalid(dir, "symlinks: \"a\" is not sorted after \"ab\"");
}

static void test_directory_rejects_duplicate_in_one_list(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_file(dir, "a", 1, 0, false);
    add_file(dir, "a", 2, 0, false);
    assert_directory_invalid(dir, "files: \"a\" appears twice");
}

static void test_directory_rejects_name_in_two_lists(void **state)
{
    (void)state;
    cleanup_directory obi_directory *d1 = obi_directory_new();
    add_directory(d1, "x", 1, 0);
    add_file(d1, "x", 1, 0, false);
    assert_directory_invalid(d1, "\"x\" appears in both directories and files");
    cleanup_directory obi_directory *d2 = obi_directory_new();
    add_file(d2, "a", 1, 0, false);
    add_file(d2, "x", 1, 0, false);
    add_symlink(d2, "b", "t");
    add_symlink(d2, "x", "t");
    assert_directory_invalid(d2, "\"x\" appears in both files and symlinks");
    cleanup_directory obi_directory *d3 = obi_directory_new();
    add_directory(d3, "m", 1, 0);
    add_directory(d3, "z", 1, 0);
    add_symlink(d3, "z", "t");
    assert_directory_invalid(d3, "\"z\" appears in both directories and symlinks");
}

static void test_directory_rejects_node_of_wrong_kind_in_list(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_file(dir, "a", 1, 0, false);
    dir->files[0].kind = OBI_NODE_DIRECTORY;
    assert_directory_invalid(dir, "files[0]: is a directory node, not a file node");
}

static void test_directory_sort_is_bytewise(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_file(dir, "\xff", 1, 0, false);
    add_file(dir, "ab", 1, 0, false);
    add_file(dir, "a", 1, 0, false);
    add_file(dir, "B", 1, 0, false);
    add_symlink(dir, "z", "t");
    add_symlink(dir, "y", "t");
    obi_directory_sort(dir);
    assert_string_equal((char *)dir->files[0].name.data, "B");
    assert_string_equal((char *)dir->files[1].name.data, "a");
    assert_string_equal((char *)dir->files[2].name.data, "ab");
    assert_string_equal((char *)dir->files[3].name.data, "\xff");
    assert_string_equal((char *)dir->symlinks[0].name.data, "y");
    assert_ok(obi_directory_validate(dir, err_ptr_));
    assert_true(obi_name_compare((const uint8_t *)"a", 1, (const uint8_t *)"a\0", 2) < 0);
}

static void test_directory_find_looks_in_every_list(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = example_directory();
    const obi_node *n = obi_directory_find(dir, (const uint8_t *)"a", 1);
    assert_non_null(n);
    assert_int_equal(n->kind, OBI_NODE_DIRECTORY);
    n = obi_directory_find(dir, (const uint8_t *)"c", 1);
    assert_non_null(n);
    assert_int_equal(n->kind, OBI_NODE_FILE);
    n = obi_directory_find(dir, (const uint8_t *)"d", 1);
    assert_non_null(n);
    assert_int_equal(n->kind, OBI_NODE_SYMLINK);
    assert_null(obi_directory_find(dir, (const uint8_t *)"e", 1));
    assert_null(obi_directory_find(dir, (const uint8_t *)"ab", 2));
}

static void test_directory_add_grows_lists(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    char name[16];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "f%03d", i);
        add_file(dir, name, (uint8_t)i, (uint64_t)i, false);
    }
    assert_int_equal(dir->n_files, 100);
    assert_string_equal((char *)dir->files[99].name.data, "f099");
    assert_int_equal(dir->files[42].size, 42);
    assert_ok(obi_directory_validate(dir, err_ptr_));
}

/* ---- sizes --------------------------------------------------------------------------------- */

static void test_directory_size_counts_entries_recursively(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = example_directory();
    /* 4 entries + the child directory's 3. */
    assert_int_equal(obi_directory_size(dir), 7);
    cleanup_directory obi_directory *empty = obi_directory_new();
    assert_int_equal(obi_directory_size(empty), 0);
}

static void test_directory_size_saturates(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_directory(dir, "a", 1, UINT64_MAX - 1);
    assert_true(obi_directory_size(dir) == UINT64_MAX);
    add_directory(dir, "b", 1, UINT64_MAX);
    assert_true(obi_directory_size(dir) == UINT64_MAX);
    cleanup_directory obi_directory *d2 = obi_directory_new();
    add_directory(d2, "a", 1, UINT64_MAX - 3);
    add_file(d2, "b", 1, 0, false);
    /* 2 entries + UINT64_MAX - 3 */
    assert_true(obi_directory_size(d2) == UINT64_MAX - 1);
}

/* ---- canonical encoding and digests -------------------------------------------------------- */

static void test_encode_empty_directory_is_zero_bytes(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    cleanup_free uint8_t *buf = NULL;
    size_t len = 99;
    assert_ok(obi_directory_encode(dir, &buf, &len, err_ptr_));
    assert_int_equal(len, 0);
    obi_digest d;
    char hex[65];
    assert_ok(obi_directory_digest(dir, &d, err_ptr_));
    obi_digest_to_hex(&d, hex);
    assert_string_equal(hex, EMPTY_B3);
}

static void test_encode_matches_hand_written_bytes(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = example_directory();
    cleanup_free uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(obi_directory_encode(dir, &buf, &len, err_ptr_));
    assert_int_equal(len, sizeof EXAMPLE_BYTES);
    assert_memory_equal(buf, EXAMPLE_BYTES, sizeof EXAMPLE_BYTES);
}

static void test_directory_digest_is_blake3_of_encoding(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = example_directory();
    obi_digest d, expected;
    assert_ok(obi_directory_digest(dir, &d, err_ptr_));
    obi_digest_of(EXAMPLE_BYTES, sizeof EXAMPLE_BYTES, &expected);
    assert_true(obi_digest_equal(&d, &expected));
    char hex[65];
    obi_digest_to_hex(&d, hex);
    assert_string_equal(hex, EXAMPLE_B3SUM);
}

static void test_encode_uses_minimal_varints(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_file(dir, "f", 0x44, 300, false);
    add_file(dir, "g", 0x55, UINT64_MAX, false);
    char target[201];
    memset(target, 't', 200);
    target[200] = 0;
    add_symlink(dir, "l", target);
    /* clang-format off */
    static const uint8_t files[] = {
        0x12, 40,                               /* files[0]: LEN 40 */
        0x0a, 1, 'f',
        0x12, 32, REP32(0x44),
        0x18, 0xac, 0x02,                       /* size 300 */
        0x12, 48,                               /* files[1]: LEN 48 */
        0x0a, 1, 'g',
        0x12, 32, REP32(0x55),
        0x18, 0xff, 0xff, 0xff, 0xff, 0xff,     /* size 2^64-1 in 10 bytes */
              0xff, 0xff, 0xff, 0xff, 0x01,
        0x1a, 0xce, 0x01,                       /* symlinks[0]: LEN 206, a two-byte varint */
        0x0a, 1, 'l',
        0x12, 0xc8, 0x01,                       /* target: LEN 200, then 200 't' */
    };
    /* clang-format on */
    cleanup_free uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(obi_directory_encode(dir, &buf, &len, err_ptr_));
    assert_int_equal(len, sizeof files + 200);
    assert_memory_equal(buf, files, sizeof files);
    for (size_t i = sizeof files; i < len; i++)
        assert_int_equal(buf[i], 't');
}

static void test_encode_writes_lists_in_field_order(void **state)
{
    (void)state;
    /* Added symlink first, then file, then directory: the encoding still starts with field 1. */
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_symlink(dir, "s", "t");
    add_file(dir, "f", 1, 0, false);
    add_directory(dir, "d", 2, 0);
    cleanup_free uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(obi_directory_encode(dir, &buf, &len, err_ptr_));
    assert_int_equal(len, 2 + 37 + 2 + 37 + 2 + 6);
    assert_int_equal(buf[0], 0x0a);
    assert_int_equal(buf[39], 0x12);
    assert_int_equal(buf[78], 0x1a);
}

static void test_decode_roundtrips_example(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = NULL;
    assert_ok(obi_directory_decode(EXAMPLE_BYTES, sizeof EXAMPLE_BYTES, &dir, err_ptr_));
    assert_int_equal(dir->n_directories, 1);
    assert_int_equal(dir->n_files, 2);
    assert_int_equal(dir->n_symlinks, 1);
    assert_string_equal((char *)dir->directories[0].name.data, "a");
    assert_int_equal(dir->directories[0].size, 3);
    assert_true(dir->files[0].executable);
    assert_false(dir->files[1].executable);
    assert_int_equal(dir->files[0].size, 5);
    assert_int_equal(dir->files[1].digest.bytes[31], 0x33);
    assert_int_equal(dir->symlinks[0].target.len, 1);
    assert_string_equal((char *)dir->symlinks[0].target.data, "b");
    assert_ok(obi_directory_validate(dir, err_ptr_));
    cleanup_free uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(obi_directory_encode(dir, &buf, &len, err_ptr_));
    assert_int_equal(len, sizeof EXAMPLE_BYTES);
    assert_memory_equal(buf, EXAMPLE_BYTES, len);
}

static void test_decode_empty_input_is_empty_directory(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = NULL;
    assert_ok(obi_directory_decode((const uint8_t *)"", 0, &dir, err_ptr_));
    assert_int_equal(dir->n_directories + dir->n_files + dir->n_symlinks, 0);
}

static void test_decode_accepts_non_canonical_and_reencodes_canonically(void **state)
{
    (void)state;
    /* size 5 as a 3-byte varint, explicit executable=false, an unknown field 9 (varint). */
    /* clang-format off */
    static const uint8_t input[] = {
        0x12, 47,                   /* files[0]: LEN 47 */
        0x0a, 1, 'b',
        0x12, 32, REP32(0x22),
        0x18, 0x85, 0x80, 0x00,     /*   size 5 as a 3-byte varint */
        0x20, 0x00,                 /*   executable=false written explicitly */
        0x48, 0x01,                 /*   unknown field 9, varint */
        0x4a, 0x00,                 /*   unknown field 9, LEN 0 */
        0x7a, 0x01, 'x',            /* unknown field 15 at the top level */
    };
    static const uint8_t canonical[] = {
        0x12, 39, 0x0a, 1, 'b', 0x12, 32, REP32(0x22), 0x18, 5,
    };
    /* clang-format on */
    cleanup_directory obi_directory *dir = NULL;
    assert_ok(obi_directory_decode(input, sizeof input, &dir, err_ptr_));
    assert_int_equal(dir->files[0].size, 5);
    cleanup_free uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(obi_directory_encode(dir, &buf, &len, err_ptr_));
    assert_int_equal(len, sizeof canonical);
    assert_memory_equal(buf, canonical, len);
}

static void test_decode_rejects_truncated_input(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_directory *dir = NULL;
    /* Cut inside the digest of the first entry: the LEN 39 runs past the end. */
    assert_fails_with(
        err, obi_directory_decode(EXAMPLE_BYTES, 20, &dir, &err), -EINVAL,
        "directories[0] (field 1) at byte offset 0: length 39 at byte offset 1 exceeds "
        "the remaining 18 bytes");
    static const uint8_t varint[] = {0x0a, 0x80};
    assert_fails_with(
        err, obi_directory_decode(varint, sizeof varint, &dir, &err), -EINVAL,
        "directories[0] (field 1) at byte offset 0: truncated varint at byte offset 1");
    static const uint8_t inner[] = {0x12, 3, 0x18, 0x85, 0x80};
    assert_fails_with(
        err, obi_directory_decode(inner, sizeof inner, &dir, &err), -EINVAL,
        "files[0].size (field 3) at byte offset 2: truncated varint at byte offset 3");
    /* Every strict prefix of the example fails cleanly (no leaks under ASan). */
    for (size_t cut = 1; cut < sizeof EXAMPLE_BYTES; cut++) {
        int r = obi_directory_decode(EXAMPLE_BYTES, cut, &dir, &err);
        if (r == 0) {
            /* A cut exactly between two entries is a valid shorter Directory. */
            obi_directory_free(dir);
            dir = NULL;
            continue;
        }
        assert_int_equal(r, -EINVAL);
        obi_error_free(err);
        err = NULL;
    }
    assert_null(dir);
}

static void test_decode_rejects_wrong_wire_types(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_directory *dir = NULL;
    static const uint8_t top[] = {0x08, 0x01}; /* directories as a varint */
    assert_fails_with(err, obi_directory_decode(top, sizeof top, &dir, &err), -EINVAL,
                      "directories[0] (field 1) at byte offset 0: wire type 0 (varint), expected 2 "
                      "(length-delimited)");
    static const uint8_t inner[] = {0x12, 4, 0x0a, 1, 'f', 0x19}; /* size as fixed64 */
    assert_fails_with(
        err, obi_directory_decode(inner, sizeof inner, &dir, &err), -EINVAL,
        "files[0].size (field 3) at byte offset 5: wire type 1 (64-bit), expected 0 (varint)");
    static const uint8_t group[] = {0x4b, 0x4c}; /* unknown field 9 as a group */
    assert_fails_with(err, obi_directory_decode(group, sizeof group, &dir, &err), -EINVAL,
                      "field 9 at byte offset 0: wire type 3 (start group) is not supported");
    static const uint8_t zero[] = {0x02, 0x00};
    assert_fails_with(err, obi_directory_decode(zero, sizeof zero, &dir, &err), -EINVAL,
                      "invalid field number 0 at byte offset 0");
    /* clang-format off */
    static const uint8_t overflow[] = {
        0x12, 12, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00,
    };
    /* clang-format on */
    assert_fails_with(
        err, obi_directory_decode(overflow, sizeof overflow, &dir, &err), -EINVAL,
        "files[0].size (field 3) at byte offset 2: varint at byte offset 3 overflows 64 bits");
    assert_null(dir);
}

static void test_decode_rejects_31_byte_digest_naming_entry(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_directory *dir = NULL;
    /* files[0]: name "f", digest of 31 bytes. */
    uint8_t buf[2 + 3 + 2 + 31];
    buf[0] = 0x12;
    buf[1] = 3 + 2 + 31;
    buf[2] = 0x0a;
    buf[3] = 1;
    buf[4] = 'f';
    buf[5] = 0x12;
    buf[6] = 31;
    memset(buf + 7, 0x22, 31);
    assert_fails_with(err, obi_directory_decode(buf, sizeof buf, &dir, &err), -EINVAL,
                      "file entry \"f\": digest is 31 bytes, expected 32");
    static const uint8_t no_digest[] = {0x0a, 3, 0x0a, 1, 'd'};
    assert_fails_with(err, obi_directory_decode(no_digest, sizeof no_digest, &dir, &err), -EINVAL,
                      "directory entry \"d\": digest is 0 bytes, expected 32");
    assert_null(dir);
}

static void test_decode_survives_single_byte_mutations(void **state)
{
    (void)state;
    /* Each mutant either fails with a message, or decodes to a Directory whose canonical
     * encoding is a fixed point (encode(decode(encode(d))) == encode(d)). */
    static const uint8_t values[] = {0x00, 0x01, 0x02, 0x07, 0x08, 0x1f, 0x20, 0x21,
                                     0x7f, 0x80, 0xff, 0x0a, 0x12, 0x1a, 0x4b};
    uint8_t buf[sizeof EXAMPLE_BYTES];
    size_t decoded = 0, refused = 0;
    for (size_t pos = 0; pos < sizeof buf; pos++) {
        for (size_t v = 0; v < sizeof values; v++) {
            memcpy(buf, EXAMPLE_BYTES, sizeof buf);
            buf[pos] = values[v];
            obi_directory *dir = NULL;
            obi_error *err = NULL;
            if (obi_directory_decode(buf, sizeof buf, &dir, &err) < 0) {
                assert_non_null(err);
                assert_null(strstr(err->message, "malformed protobuf"));
                obi_error_free(err);
                refused++;
                continue;
            }
            cleanup_free uint8_t *a = NULL;
            cleanup_free uint8_t *b = NULL;
            size_t a_len = 0, b_len = 0;
            cleanup_directory obi_directory *again = NULL;
            assert_ok(obi_directory_encode(dir, &a, &a_len, err_ptr_));
            obi_directory_free(dir);
            assert_ok(obi_directory_decode(a, a_len, &again, err_ptr_));
            assert_ok(obi_directory_encode(again, &b, &b_len, err_ptr_));
            assert_int_equal(a_len, b_len);
            assert_memory_equal(a, b, a_len);
            decoded++;
        }
    }
    assert_true(decoded > 0);
    assert_true(refused > 0);
}

/* ---- canonical encodings checked in place ------------------------------------------------- */

typedef struct visited_entries {
    size_t count;
    char names[8][16];
} visited_entries;

static int record_entry(const obi_node *entry, void *ctx, obi_error **err)
{
    (void)err;
    visited_entries *v = ctx;
    assert_true(entry->kind == OBI_NODE_DIRECTORY);
    if (v->count < 8)
        snprintf(v->names[v->count], sizeof v->names[0], "%.*s", (int)entry->name.len,
                 (const char *)entry->name.data);
    v->count++;
    return 0;
}

static void test_check_canonical_accepts_our_encoding_and_visits_directories(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = example_directory();
    add_directory(dir, "e", 0x44, 7);
    obi_directory_sort(dir);
    cleanup_free uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(obi_directory_encode(dir, &buf, &len, err_ptr_));
    uint64_t size = 0;
    visited_entries v = {0};
    obi_error *err = NULL;
    assert_int_equal(obi_directory_check_canonical(buf, len, &size, record_entry, &v, &err), 1);
    assert_int_equal(size, obi_directory_size(dir));
    assert_int_equal(v.count, 2);
    assert_string_equal(v.names[0], "a");
    assert_string_equal(v.names[1], "e");
    assert_int_equal(
        obi_directory_check_canonical(EXAMPLE_BYTES, sizeof EXAMPLE_BYTES, &size, NULL, NULL, &err),
        1);
    assert_int_equal(size, 7);
    assert_int_equal(obi_directory_check_canonical((const uint8_t *)"", 0, &size, NULL, NULL, &err),
                     1);
    assert_int_equal(size, 0);
}

static void test_check_canonical_says_0_for_other_forms(void **state)
{
    (void)state;
    /* clang-format off */
    static const uint8_t explicit_false[] = {
        0x12, 39, 0x0a, 1, 'c', 0x12, 32, REP32(0x33), 0x20, 0x00};
    static const uint8_t long_varint[] = {
        0x12, 40, 0x0a, 1, 'c', 0x12, 32, REP32(0x33), 0x18, 0x85, 0x00};
    static const uint8_t fields_swapped[] = {
        0x12, 37, 0x12, 32, REP32(0x33), 0x0a, 1, 'c'};
    static const uint8_t lists_swapped[] = {
        0x1a, 6, 0x0a, 1, 'd', 0x12, 1, 'b',
        0x12, 37, 0x0a, 1, 'c', 0x12, 32, REP32(0x33)};
    static const uint8_t unknown_field[] = {0x7a, 0x01, 'x'};
    /* clang-format on */
    const struct {
        const uint8_t *data;
        size_t len;
    } cases[] = {{explicit_false, sizeof explicit_false},
                 {long_varint, sizeof long_varint},
                 {fields_swapped, sizeof fields_swapped},
                 {lists_swapped, sizeof lists_swapped},
                 {unknown_field, sizeof unknown_field}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t size = 0;
        obi_error *err = NULL;
        assert_int_equal(
            obi_directory_check_canonical(cases[i].data, cases[i].len, &size, NULL, NULL, &err), 0);
        assert_null(err);
        cleanup_directory obi_directory *dir = NULL;
        assert_ok(obi_directory_decode(cases[i].data, cases[i].len, &dir, err_ptr_));
    }
}

/* What obi_directory_decode + obi_directory_validate say about data, or NULL if it is fine. */
static char *decode_and_validate_message(const uint8_t *data, size_t len)
{
    obi_directory *dir = NULL;
    obi_error *err = NULL;
    int r = obi_directory_decode(data, len, &dir, &err);
    if (r == 0)
        r = obi_directory_validate(dir, &err);
    obi_directory_free(dir);
    char *message = r < 0 ? strdup(err->message) : NULL;
    obi_error_free(err);
    return message;
}

static void test_check_canonical_agrees_with_decode_on_single_byte_mutations(void **state)
{
    (void)state;
    /* Every mutant: canonical and valid (1) exactly when re-encoding gives the same bytes and
     * validation passes; refused (< 0) with the very message decode + validate give; else 0,
     * and then decoding works. */
    static const uint8_t values[] = {0x00, 0x01, 0x02, 0x07, 0x08, 0x1f, 0x20, 0x21, 0x2f,
                                     0x61, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x1a, 0x4b};
    uint8_t buf[sizeof EXAMPLE_BYTES];
    size_t canonical = 0, refused = 0, other = 0;
    for (size_t pos = 0; pos < sizeof buf; pos++) {
        for (size_t v = 0; v < sizeof values; v++) {
            memcpy(buf, EXAMPLE_BYTES, sizeof buf);
            buf[pos] = values[v];
            uint64_t size = 0;
            obi_error *err = NULL;
            int r = obi_directory_check_canonical(buf, sizeof buf, &size, NULL, NULL, &err);
            cleanup_free char *expected = decode_and_validate_message(buf, sizeof buf);
            if (r < 0) {
                assert_non_null(expected);
                if (strcmp(err->message, expected) != 0)
                    print_error("mutant %zu=%02x: '%s' != '%s'\n", pos, values[v], err->message,
                                expected);
                assert_string_equal(err->message, expected);
                obi_error_free(err);
                refused++;
                continue;
            }
            assert_null(err);
            cleanup_directory obi_directory *dir = NULL;
            if (r == 0 && expected) {
                other++; /* another form, and decoding or validation refuses it */
                continue;
            }
            assert_ok(obi_directory_decode(buf, sizeof buf, &dir, err_ptr_));
            cleanup_free uint8_t *again = NULL;
            size_t again_len = 0;
            assert_ok(obi_directory_encode(dir, &again, &again_len, err_ptr_));
            bool same = again_len == sizeof buf && !memcmp(again, buf, sizeof buf);
            if (r == 1) {
                assert_null(expected);
                assert_true(same);
                assert_int_equal(size, obi_directory_size(dir));
                canonical++;
            } else {
                assert_false(same);
                other++;
            }
        }
    }
    assert_true(canonical > 0);
    assert_true(refused > 0);
    assert_true(other > 0);
}

static void test_check_canonical_names_the_entry_like_validate(void **state)
{
    (void)state;
    /* A name in two lists, found by the merge after each list checked out. */
    cleanup_directory obi_directory *dir = obi_directory_new();
    add_directory(dir, "x", 0x11, 1);
    add_file(dir, "a", 0x22, 1, false);
    add_file(dir, "x", 0x22, 1, false);
    cleanup_free uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(obi_directory_encode(dir, &buf, &len, err_ptr_));
    uint64_t size = 0;
    obi_error *err = NULL;
    assert_fails_with(err, obi_directory_check_canonical(buf, len, &size, NULL, NULL, &err),
                      -EINVAL, "\"x\" appears in both directories and files");
}

/* ---- Node messages ------------------------------------------------------------------------- */

static void test_node_encode_matches_hand_written_bytes(void **state)
{
    (void)state;
    cleanup_node obi_node n = {0};
    obi_digest d = digest_filled(0x22);
    assert_int_equal(obi_node_init_file(&n, "b", 1, &d, 5, true), 0);
    /* clang-format off */
    static const uint8_t expected[] = {
        0x12, 41,                   /* Node.file: field 2, LEN 41 */
        0x0a, 1, 'b',
        0x12, 32, REP32(0x22),
        0x18, 5,
        0x20, 1,
    };
    /* clang-format on */
    cleanup_free uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(obi_node_encode(&n, &buf, &len, err_ptr_));
    assert_int_equal(len, sizeof expected);
    assert_memory_equal(buf, expected, len);
    cleanup_node obi_node back = {0};
    assert_ok(obi_node_decode(buf, len, &back, err_ptr_));
    assert_int_equal(back.kind, OBI_NODE_FILE);
    assert_true(back.executable);
    assert_int_equal(back.size, 5);
    assert_true(obi_digest_equal(&back.digest, &d));
}

static void test_node_roundtrips_directory_and_symlink(void **state)
{
    (void)state;
    cleanup_node obi_node dn = {0}, sn = {0}, back1 = {0}, back2 = {0};
    obi_digest d = digest_filled(0x99);
    assert_int_equal(obi_node_init_directory(&dn, "dir", 3, &d, 12), 0);
    assert_int_equal(obi_node_init_symlink(&sn, "s", 1, "../x", 4), 0);
    cleanup_free uint8_t *b1 = NULL;
    cleanup_free uint8_t *b2 = NULL;
    size_t l1, l2;
    assert_ok(obi_node_encode(&dn, &b1, &l1, err_ptr_));
    assert_ok(obi_node_encode(&sn, &b2, &l2, err_ptr_));
    static const uint8_t symlink_bytes[] = {0x1a, 9, 0x0a, 1, 's', 0x12, 4, '.', '.', '/', 'x'};
    assert_int_equal(l2, sizeof symlink_bytes);
    assert_memory_equal(b2, symlink_bytes, l2);
    assert_int_equal(b1[0], 0x0a);
    assert_ok(obi_node_decode(b1, l1, &back1, err_ptr_));
    assert_ok(obi_node_decode(b2, l2, &back2, err_ptr_));
    assert_int_equal(back1.kind, OBI_NODE_DIRECTORY);
    assert_int_equal(back1.size, 12);
    assert_string_equal((char *)back1.name.data, "dir");
    assert_int_equal(back2.kind, OBI_NODE_SYMLINK);
    assert_string_equal((char *)back2.target.data, "../x");
}

static void test_node_decode_rejects_unset_oneof_and_bad_digest(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_node n = {0};
    assert_fails_with(err, obi_node_decode((const uint8_t *)"", 0, &n, &err), -EINVAL,
                      "none of directory, file or symlink is set");
    static const uint8_t short_digest[] = {0x0a, 5, 0x0a, 1, 'd', 0x12, 0};
    assert_fails_with(err, obi_node_decode(short_digest, sizeof short_digest, &n, &err), -EINVAL,
                      "directory node \"d\": digest is 0 bytes, expected 32");
    static const uint8_t wrong[] = {0x10, 0x01};
    assert_fails_with(
        err, obi_node_decode(wrong, sizeof wrong, &n, &err), -EINVAL,
        "file (field 2) at byte offset 0: wire type 0 (varint), expected 2 (length-delimited)");
    assert_null(n.name.data);
}

static void test_node_with_empty_member_keeps_the_oneof(void **state)
{
    (void)state;
    cleanup_node obi_node n = {0};
    assert_int_equal(obi_node_init_symlink(&n, "", 0, "", 0), 0);
    cleanup_free uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(obi_node_encode(&n, &buf, &len, err_ptr_));
    static const uint8_t expected[] = {0x1a, 0x00};
    assert_int_equal(len, sizeof expected);
    assert_memory_equal(buf, expected, len);
    cleanup_node obi_node back = {0};
    assert_ok(obi_node_decode(buf, len, &back, err_ptr_));
    assert_int_equal(back.kind, OBI_NODE_SYMLINK);
    assert_int_equal(back.name.len, 0);
    assert_non_null(back.name.data);
    assert_int_equal(back.target.len, 0);
}

/* ---- node_pb ------------------------------------------------------------------------------- */

static void test_node_pb_roundtrips_every_kind(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = example_directory();
    const obi_node *nodes[] = {&dir->directories[0], &dir->files[0], &dir->symlinks[0]};
    for (size_t i = 0; i < 3; i++) {
        Tvix__Castore__V1__Node *pb = obi_node_to_pb(nodes[i]);
        assert_non_null(pb);
        assert_int_equal(pb->node_case, (int)nodes[i]->kind);
        cleanup_node obi_node back = {0};
        assert_ok(obi_node_from_pb(pb, &back, err_ptr_));
        obi_node_pb_free(pb);
        assert_int_equal(back.kind, nodes[i]->kind);
        assert_int_equal(back.name.len, nodes[i]->name.len);
        assert_memory_equal(back.name.data, nodes[i]->name.data, back.name.len);
        assert_int_equal(back.size, nodes[i]->size);
        assert_int_equal(back.executable, nodes[i]->executable);
        assert_true(obi_digest_equal(&back.digest, &nodes[i]->digest));
        assert_int_equal(back.target.len, nodes[i]->target.len);
    }
    obi_node_pb_free(NULL);
}

static void test_node_from_pb_rejects_unset_oneof(void **state)
{
    (void)state;
    Tvix__Castore__V1__Node pb = TVIX__CASTORE__V1__NODE__INIT;
    obi_error *err = NULL;
    obi_node n = {0};
    assert_fails_with(err, obi_node_from_pb(&pb, &n, &err), -EINVAL, "none of directory");
}

static void test_from_pb_rejects_missing_members(void **state)
{
    (void)state;
    Tvix__Castore__V1__Node pb = TVIX__CASTORE__V1__NODE__INIT;
    pb.node_case = TVIX__CASTORE__V1__NODE__NODE_FILE;
    obi_error *err = NULL;
    obi_node n = {0};
    assert_fails_with(err, obi_node_from_pb(&pb, &n, &err), -EINVAL, "none of directory");
    Tvix__Castore__V1__Directory dpb = TVIX__CASTORE__V1__DIRECTORY__INIT;
    Tvix__Castore__V1__FileNode *files[1] = {NULL};
    dpb.n_files = 1;
    dpb.files = files;
    obi_directory *dir = NULL;
    assert_fails_with(err, obi_directory_from_pb(&dpb, &dir, &err), -EINVAL,
                      "files[0]: missing entry");
    assert_null(dir);
}

static void test_directory_pb_roundtrip_packs_to_same_bytes(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = example_directory();
    Tvix__Castore__V1__Directory *pb = obi_directory_to_pb(dir);
    assert_non_null(pb);
    size_t len = tvix__castore__v1__directory__get_packed_size(pb);
    assert_int_equal(len, sizeof EXAMPLE_BYTES);
    cleanup_free uint8_t *buf = malloc(len);
    tvix__castore__v1__directory__pack(pb, buf);
    assert_memory_equal(buf, EXAMPLE_BYTES, len);
    cleanup_directory obi_directory *back = NULL;
    assert_ok(obi_directory_from_pb(pb, &back, err_ptr_));
    obi_directory_pb_free(pb);
    obi_digest a, b;
    assert_ok(obi_directory_digest(dir, &a, err_ptr_));
    assert_ok(obi_directory_digest(back, &b, err_ptr_));
    assert_true(obi_digest_equal(&a, &b));
    obi_directory_pb_free(NULL);
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static char *dump(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(s);
    return s;
}

static void test_json_output_omits_defaults_and_writes_size_as_string(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = example_directory();
    cleanup_json json_t *d = obi_node_to_json(&dir->directories[0]);
    cleanup_json json_t *f = obi_node_to_json(&dir->files[1]);
    cleanup_json json_t *x = obi_node_to_json(&dir->files[0]);
    cleanup_json json_t *s = obi_node_to_json(&dir->symlinks[0]);
    cleanup_free char *ds = dump(d);
    cleanup_free char *fs = dump(f);
    cleanup_free char *xs = dump(x);
    cleanup_free char *ss = dump(s);
    assert_string_equal(
        ds, "{\"directory\":{\"digest\":\"ERERERERERERERERERERERERERERERERERERERERERE=\","
            "\"name\":\"YQ==\",\"size\":\"3\"}}");
    assert_string_equal(fs,
                        "{\"file\":{\"digest\":\"MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM=\","
                        "\"name\":\"Yw==\"}}");
    assert_string_equal(xs,
                        "{\"file\":{\"digest\":\"IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=\","
                        "\"executable\":true,\"name\":\"Yg==\",\"size\":\"5\"}}");
    assert_string_equal(ss, "{\"symlink\":{\"name\":\"ZA==\",\"target\":\"Yg==\"}}");
}

static void test_json_roundtrips_every_kind(void **state)
{
    (void)state;
    cleanup_directory obi_directory *dir = example_directory();
    add_file(dir, "big", 0xfe, UINT64_MAX, true);
    const obi_node *nodes[] = {&dir->directories[0], &dir->files[0], &dir->files[1], &dir->files[2],
                               &dir->symlinks[0]};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(nodes); i++) {
        cleanup_json json_t *j = obi_node_to_json(nodes[i]);
        assert_non_null(j);
        cleanup_node obi_node back = {0};
        assert_ok(obi_node_from_json(j, &back, err_ptr_));
        assert_int_equal(back.kind, nodes[i]->kind);
        assert_int_equal(back.name.len, nodes[i]->name.len);
        assert_memory_equal(back.name.data, nodes[i]->name.data, back.name.len);
        assert_true(back.size == nodes[i]->size);
        assert_int_equal(back.executable, nodes[i]->executable);
        if (back.kind != OBI_NODE_SYMLINK)
            assert_true(obi_digest_equal(&back.digest, &nodes[i]->digest));
        else
            assert_string_equal((char *)back.target.data, (char *)nodes[i]->target.data);
    }
}

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j)
        print_error("json: %s\n", jerr.text);
    assert_non_null(j);
    return j;
}

static void test_json_accepts_url_safe_unpadded_base64_and_numeric_size(void **state)
{
    (void)state;
    /* 32 bytes of 0xfb: standard "+/st..." vs URL-safe "-_..." */
    cleanup_json json_t *j = parse("{\"file\":{\"name\":\"Yg\",\"digest\":"
                                   "\"-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s\","
                                   "\"size\":42,\"executable\":false}}");
    cleanup_node obi_node n = {0};
    assert_ok(obi_node_from_json(j, &n, err_ptr_));
    assert_string_equal((char *)n.name.data, "b");
    assert_int_equal(n.size, 42);
    assert_false(n.executable);
    for (size_t i = 0; i < OBI_DIGEST_LEN; i++)
        assert_int_equal(n.digest.bytes[i], 0xfb);
    cleanup_json json_t *big = parse("{\"directory\":{\"name\":\"YQ==\",\"digest\":"
                                     "\"ERERERERERERERERERERERERERERERERERERERERERE=\","
                                     "\"size\":\"18446744073709551615\"}}");
    cleanup_node obi_node b = {0};
    assert_ok(obi_node_from_json(big, &b, err_ptr_));
    assert_true(b.size == UINT64_MAX);
    cleanup_json json_t *nulls = parse("{\"file\":null,\"symlink\":{\"name\":\"YQ==\","
                                       "\"target\":\"Yg==\"}}");
    cleanup_node obi_node s = {0};
    assert_ok(obi_node_from_json(nulls, &s, err_ptr_));
    assert_int_equal(s.kind, OBI_NODE_SYMLINK);
}

static void assert_json_fails(const char *text, const char *needle)
{
    cleanup_json json_t *j = parse(text);
    obi_error *err = NULL;
    obi_node n = {0};
    assert_fails_with(err, obi_node_from_json(j, &n, &err), -EINVAL, needle);
    assert_null(n.name.data);
}

#define D32 "\"ERERERERERERERERERERERERERERERERERERERERERE=\""

static void test_json_rejects_unknown_keys(void **state)
{
    (void)state;
    assert_json_fails("{\"blob\":{}}", "node: unknown key \"blob\"");
    assert_json_fails("{\"file\":{\"name\":\"YQ==\",\"digest\":" D32 ",\"mode\":1}}",
                      "node.file: unknown key \"mode\"");
    assert_json_fails("{\"symlink\":{\"name\":\"YQ==\",\"digest\":" D32 "}}",
                      "node.symlink: unknown key \"digest\"");
    assert_json_fails("{\"directory\":{\"name\":\"YQ==\",\"executable\":true}}",
                      "node.directory: unknown key \"executable\"");
}

static void test_json_rejects_two_oneof_members_or_none(void **state)
{
    (void)state;
    assert_json_fails("{\"symlink\":{},\"file\":{}}", "both \"file\" and \"symlink\" are set");
    assert_json_fails("{}", "none of directory, file or symlink is set");
    assert_json_fails("{\"file\":null}", "none of directory, file or symlink is set");
    assert_json_fails("[]", "node: expected a JSON object");
    assert_json_fails("{\"file\":[]}", "node.file: expected a JSON object");
}

static void test_json_rejects_bad_values(void **state)
{
    (void)state;
    assert_json_fails("{\"file\":{\"name\":\"Y!==\",\"digest\":" D32 "}}",
                      "node.file.name: base64: invalid character at offset 1");
    assert_json_fails("{\"file\":{\"name\":5}}", "node.file.name: expected a base64 string");
    assert_json_fails("{\"file\":{\"name\":\"YQ==\",\"digest\":\"AAAA\"}}",
                      "file node \"a\": digest is 3 bytes, expected 32");
    assert_json_fails("{\"directory\":{\"name\":\"YQ==\"}}",
                      "directory node \"a\": digest is 0 bytes, expected 32");
    assert_json_fails("{\"file\":{\"digest\":" D32 ",\"size\":-1}}",
                      "node.file.size: -1 is negative");
    assert_json_fails("{\"file\":{\"digest\":" D32 ",\"size\":\"1x\"}}",
                      "node.file.size: \"1x\" is not a decimal uint64");
    assert_json_fails("{\"file\":{\"digest\":" D32 ",\"size\":\"18446744073709551616\"}}",
                      "does not fit in uint64");
    assert_json_fails("{\"file\":{\"digest\":" D32 ",\"size\":1.5}}", "is not a uint64");
    assert_json_fails("{\"file\":{\"digest\":" D32 ",\"size\":true}}",
                      "expected a uint64 as a string or number");
    assert_json_fails("{\"file\":{\"digest\":" D32 ",\"executable\":\"yes\"}}",
                      "node.file.executable: expected true or false");
}

/* ---- the decoders and the .proto ---------------------------------------------------------- */

static int decode_directory(const uint8_t *data, size_t len, obi_error **err)
{
    obi_directory *dir = NULL;
    int r = obi_directory_decode(data, len, &dir, err);
    obi_directory_free(dir);
    return r;
}

static int check_directory_in_place(const uint8_t *data, size_t len, obi_error **err)
{
    uint64_t size = 0;
    int r = obi_directory_check_canonical(data, len, &size, NULL, NULL, err);
    return r < 0 ? r : 0;
}

static int decode_node(const uint8_t *data, size_t len, obi_error **err)
{
    obi_node node = {0};
    int r = obi_node_decode(data, len, &node, err);
    obi_node_clear(&node);
    return r;
}

static void test_decoders_check_every_field_of_the_proto(void **state)
{
    (void)state;
    /* Directory: 3 lists, 9 fields in their entries; Node: 3 members, 9 fields in them. */
    assert_int_equal(obi_test_pb_every_field_is_checked(&tvix__castore__v1__directory__descriptor,
                                                        decode_directory),
                     12);
    assert_int_equal(obi_test_pb_every_field_is_checked(&tvix__castore__v1__directory__descriptor,
                                                        check_directory_in_place),
                     12);
    assert_int_equal(
        obi_test_pb_every_field_is_checked(&tvix__castore__v1__node__descriptor, decode_node), 12);
}

static void assert_field_number(const ProtobufCMessageDescriptor *desc, const char *name,
                                unsigned number)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, name);
    if (!f || f->id != number)
        print_error("%s.%s is field %u in the .proto, %u in node_internal.h\n", desc->name, name,
                    f ? f->id : 0, number);
    assert_non_null(f);
    assert_int_equal(f->id, number);
}

static void test_in_place_field_numbers_are_the_protos(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *dir = &tvix__castore__v1__directory__descriptor;
    assert_field_number(dir, "directories", OBI_DIRECTORY_FIELD_DIRECTORIES);
    assert_field_number(dir, "files", OBI_DIRECTORY_FIELD_FILES);
    assert_field_number(dir, "symlinks", OBI_DIRECTORY_FIELD_SYMLINKS);
    const ProtobufCMessageDescriptor *entries[] = {&tvix__castore__v1__directory_node__descriptor,
                                                   &tvix__castore__v1__file_node__descriptor,
                                                   &tvix__castore__v1__symlink_node__descriptor};
    for (size_t i = 0; i < 3; i++)
        assert_field_number(entries[i], "name", OBI_NODE_FIELD_NAME);
    for (size_t i = 0; i < 2; i++) {
        assert_field_number(entries[i], "digest", OBI_NODE_FIELD_DIGEST);
        assert_field_number(entries[i], "size", OBI_NODE_FIELD_SIZE);
    }
    assert_field_number(entries[1], "executable", OBI_NODE_FIELD_EXECUTABLE);
    assert_field_number(entries[2], "target", OBI_NODE_FIELD_TARGET);
    /* Each entry message has exactly these fields: a new one would need reading in place. */
    assert_int_equal(entries[0]->n_fields, 3);
    assert_int_equal(entries[1]->n_fields, 4);
    assert_int_equal(entries[2]->n_fields, 2);
    assert_int_equal(dir->n_fields, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_accepts_valid_names),
        cmocka_unit_test(test_name_rejects_empty),
        cmocka_unit_test(test_name_rejects_256_bytes),
        cmocka_unit_test(test_name_rejects_dot_and_dotdot),
        cmocka_unit_test(test_name_rejects_slash),
        cmocka_unit_test(test_name_rejects_nul),
        cmocka_unit_test(test_node_validate_names_the_node),
        cmocka_unit_test(test_node_validate_rejects_unknown_kind),
        cmocka_unit_test(test_symlink_target_accepts_1_and_4095_bytes),
        cmocka_unit_test(test_symlink_target_rejects_empty),
        cmocka_unit_test(test_symlink_target_rejects_4096_bytes),
        cmocka_unit_test(test_symlink_target_rejects_nul),
        cmocka_unit_test(test_directory_validate_accepts_example_and_empty),
        cmocka_unit_test(test_directory_rejects_invalid_entry_name),
        cmocka_unit_test(test_directory_rejects_invalid_symlink_target),
        cmocka_unit_test(test_directory_rejects_unsorted_directories),
        cmocka_unit_test(test_directory_rejects_unsorted_files),
        cmocka_unit_test(test_directory_rejects_unsorted_symlinks),
        cmocka_unit_test(test_directory_rejects_duplicate_in_one_list),
        cmocka_unit_test(test_directory_rejects_name_in_two_lists),
        cmocka_unit_test(test_directory_rejects_node_of_wrong_kind_in_list),
        cmocka_unit_test(test_directory_sort_is_bytewise),
        cmocka_unit_test(test_directory_find_looks_in_every_list),
        cmocka_unit_test(test_directory_add_grows_lists),
        cmocka_unit_test(test_directory_size_counts_entries_recursively),
        cmocka_unit_test(test_directory_size_saturates),
        cmocka_unit_test(test_encode_empty_directory_is_zero_bytes),
        cmocka_unit_test(test_encode_matches_hand_written_bytes),
        cmocka_unit_test(test_directory_digest_is_blake3_of_encoding),
        cmocka_unit_test(test_encode_uses_minimal_varints),
        cmocka_unit_test(test_encode_writes_lists_in_field_order),
        cmocka_unit_test(test_decode_roundtrips_example),
        cmocka_unit_test(test_decode_empty_input_is_empty_directory),
        cmocka_unit_test(test_decode_accepts_non_canonical_and_reencodes_canonically),
        cmocka_unit_test(test_decode_rejects_truncated_input),
        cmocka_unit_test(test_decode_rejects_wrong_wire_types),
        cmocka_unit_test(test_decode_rejects_31_byte_digest_naming_entry),
        cmocka_unit_test(test_decode_survives_single_byte_mutations),
        cmocka_unit_test(test_check_canonical_accepts_our_encoding_and_visits_directories),
        cmocka_unit_test(test_check_canonical_says_0_for_other_forms),
        cmocka_unit_test(test_check_canonical_agrees_with_decode_on_single_byte_mutations),
        cmocka_unit_test(test_check_canonical_names_the_entry_like_validate),
        cmocka_unit_test(test_decoders_check_every_field_of_the_proto),
        cmocka_unit_test(test_in_place_field_numbers_are_the_protos),
        cmocka_unit_test(test_node_encode_matches_hand_written_bytes),
        cmocka_unit_test(test_node_roundtrips_directory_and_symlink),
        cmocka_unit_test(test_node_decode_rejects_unset_oneof_and_bad_digest),
        cmocka_unit_test(test_node_with_empty_member_keeps_the_oneof),
        cmocka_unit_test(test_node_pb_roundtrips_every_kind),
        cmocka_unit_test(test_node_from_pb_rejects_unset_oneof),
        cmocka_unit_test(test_from_pb_rejects_missing_members),
        cmocka_unit_test(test_directory_pb_roundtrip_packs_to_same_bytes),
        cmocka_unit_test(test_json_output_omits_defaults_and_writes_size_as_string),
        cmocka_unit_test(test_json_roundtrips_every_kind),
        cmocka_unit_test(test_json_accepts_url_safe_unpadded_base64_and_numeric_size),
        cmocka_unit_test(test_json_rejects_unknown_keys),
        cmocka_unit_test(test_json_rejects_two_oneof_members_or_none),
        cmocka_unit_test(test_json_rejects_bad_values),
    };
    return cmocka_run_group_tests_name("node", tests, NULL, NULL);
}
