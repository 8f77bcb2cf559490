/*
 * Unit tests for the protobuf wire reader, writer and the descriptor-driven checks (pb_wire.h):
 * varint edge cases, keys, values of every wire type, unknown fields, wrong wire types, paths and
 * byte offsets inside embedded messages, packed and unpacked repeated fields, the depth limit,
 * and the canonical form against what protobuf-c's pack writes, with an error for each way of
 * departing from it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build.pb-c.h"
#include "castore.pb-c.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/pb_wire.h"
#include "test_helpers.h"

/* ---- reader and writer ---------------------------------------------------------------------- */

static void test_varints_round_trip_at_every_length(void **state)
{
    (void)state;
    static const struct {
        uint64_t value;
        size_t len;
    } cases[] = {
        {0, 1},           {1, 1},           {127, 1},        {128, 2},        {300, 2},
        {16383, 2},       {16384, 3},       {UINT32_MAX, 5}, {1ULL << 56, 9}, {(1ULL << 63) - 1, 9},
        {1ULL << 63, 10}, {UINT64_MAX, 10},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        uint8_t buf[OBI_PB_VARINT_MAX];
        size_t n = obi_pb_put_varint(buf, cases[i].value);
        assert_int_equal(n, cases[i].len);
        obi_pb_reader r = obi_pb_reader_of(buf, n);
        uint64_t v = 0;
        bool minimal = false;
        assert_ok(obi_pb_read_varint(&r, &v, &minimal, err_ptr_));
        assert_true(v == cases[i].value);
        assert_true(minimal);
        assert_true(obi_pb_reader_done(&r));
    }
}

static void test_varint_of_ten_bytes_overflowing_64_bits_is_refused(void **state)
{
    (void)state;
    obi_error *err = NULL;
    uint64_t v = 0;
    /* Bit 64 set in the tenth byte. */
    static const uint8_t over[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    obi_pb_reader r = obi_pb_reader_of(over, sizeof over);
    assert_fails_with(err, obi_pb_read_varint(&r, &v, NULL, &err), -EINVAL,
                      "varint at byte offset 0 overflows 64 bits");
    /* An eleventh byte announced by the tenth. */
    static const uint8_t eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                     0x80, 0x80, 0x80, 0x81, 0x00};
    r = obi_pb_reader_of(eleven, sizeof eleven);
    assert_fails_with(err, obi_pb_read_varint(&r, &v, NULL, &err), -EINVAL,
                      "varint at byte offset 0 overflows 64 bits");
}

static void test_truncated_varint_names_where_it_starts(void **state)
{
    (void)state;
    obi_error *err = NULL;
    uint64_t v = 0;
    static const uint8_t data[] = {0x01, 0x80, 0x80};
    obi_pb_reader r = obi_pb_reader_of(data, sizeof data);
    assert_ok(obi_pb_read_varint(&r, &v, NULL, err_ptr_));
    assert_fails_with(err, obi_pb_read_varint(&r, &v, NULL, &err), -EINVAL,
                      "truncated varint at byte offset 1");
    r = obi_pb_reader_of(data, 0);
    assert_fails_with(err, obi_pb_read_varint(&r, &v, NULL, &err), -EINVAL,
                      "truncated varint at byte offset 0");
}

static void test_non_minimal_varints_are_read_and_flagged(void **state)
{
    (void)state;
    static const struct {
        uint8_t bytes[3];
        size_t len;
        uint64_t value;
        bool minimal;
    } cases[] = {
        {{0x80, 0x00}, 2, 0, false},
        {{0x81, 0x00}, 2, 1, false},
        {{0x80, 0x80, 0x00}, 3, 0, false},
        {{0x80, 0x01}, 2, 128, true},
        {{0x00}, 1, 0, true},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        obi_pb_reader r = obi_pb_reader_of(cases[i].bytes, cases[i].len);
        uint64_t v = 99;
        bool minimal = !cases[i].minimal;
        assert_ok(obi_pb_read_varint(&r, &v, &minimal, err_ptr_));
        assert_true(v == cases[i].value);
        assert_int_equal(minimal, cases[i].minimal);
    }
}

static void test_keys_refuse_field_numbers_out_of_range_and_long_keys(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_pb_field f;
    static const uint8_t zero[] = {0x02};
    obi_pb_reader r = obi_pb_reader_of(zero, sizeof zero);
    assert_fails_with(err, obi_pb_read_key(&r, &f, &err), -EINVAL,
                      "invalid field number 0 at byte offset 0");
    uint8_t big[OBI_PB_VARINT_MAX];
    size_t n = obi_pb_put_varint(big, (uint64_t)(OBI_PB_FIELD_NUMBER_MAX + 1) << 3);
    r = obi_pb_reader_of(big, n);
    assert_fails_with(err, obi_pb_read_key(&r, &f, &err), -EINVAL,
                      "invalid field number 536870912 at byte offset 0");
    /* Field 1 in six bytes: small enough, but protobuf-c reads keys of five bytes at most. */
    static const uint8_t six[] = {0x88, 0x80, 0x80, 0x80, 0x80, 0x00};
    r = obi_pb_reader_of(six, sizeof six);
    assert_fails_with(err, obi_pb_read_key(&r, &f, &err), -EINVAL,
                      "key at byte offset 0 is longer than 5 bytes");
    static const uint8_t five[] = {0x88, 0x80, 0x80, 0x80, 0x00};
    r = obi_pb_reader_of(five, sizeof five);
    assert_ok(obi_pb_read_key(&r, &f, err_ptr_));
    assert_int_equal(f.number, 1);
    assert_false(f.minimal);
    uint8_t max[OBI_PB_KEY_MAX];
    n = obi_pb_put_key(max, OBI_PB_FIELD_NUMBER_MAX, OBI_PB_I32);
    assert_int_equal(n, OBI_PB_KEY_MAX);
    r = obi_pb_reader_of(max, n);
    assert_ok(obi_pb_read_key(&r, &f, err_ptr_));
    assert_int_equal(f.number, OBI_PB_FIELD_NUMBER_MAX);
    assert_int_equal(f.wire_type, OBI_PB_I32);
}

static void test_next_reads_every_wire_type(void **state)
{
    (void)state;
    /* 1: varint 150; 2: "hi"; 3: fixed64 0x0102030405060708; 4: fixed32 0x0a0b0c0d */
    static const uint8_t data[] = {0x08, 0x96, 0x01, 0x12, 0x02, 'h',  'i',  0x19, 0x08, 0x07, 0x06,
                                   0x05, 0x04, 0x03, 0x02, 0x01, 0x25, 0x0d, 0x0c, 0x0b, 0x0a};
    obi_pb_reader r = obi_pb_reader_of(data, sizeof data);
    obi_pb_field f;
    assert_int_equal(obi_pb_next(&r, &f, NULL), 1);
    assert_int_equal(f.number, 1);
    assert_int_equal(f.value, 150);
    assert_int_equal(f.offset, 0);
    assert_int_equal(obi_pb_next(&r, &f, NULL), 1);
    assert_int_equal(f.wire_type, OBI_PB_LEN);
    assert_int_equal(f.len, 2);
    assert_memory_equal(f.data, "hi", 2);
    assert_int_equal(f.offset, 3);
    assert_int_equal(obi_pb_next(&r, &f, NULL), 1);
    assert_true(f.value == 0x0102030405060708ULL);
    assert_int_equal(obi_pb_next(&r, &f, NULL), 1);
    assert_int_equal(f.value, 0x0a0b0c0d);
    assert_int_equal(f.offset, 16);
    assert_int_equal(obi_pb_next(&r, &f, NULL), 0);
}

static void test_values_refuse_truncation_groups_and_invalid_wire_types(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_pb_field f;
    static const struct {
        uint8_t bytes[8];
        size_t len;
        const char *needle;
    } cases[] = {
        {{0x09, 1, 2, 3}, 4, "field 1 at byte offset 0: truncated 8-byte value at byte offset 1"},
        {{0x0d, 1, 2}, 3, "field 1 at byte offset 0: truncated 4-byte value at byte offset 1"},
        {{0x0a, 0x05, 'a'},
         3,
         "field 1 at byte offset 0: length 5 at byte offset 1 exceeds the remaining 1 bytes"},
        {{0x0a}, 1, "field 1 at byte offset 0: truncated varint at byte offset 1"},
        /* length 0 in six bytes (fuzz_pb_wire: protobuf-c refuses it) */
        {{0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00},
         7,
         "field 1 at byte offset 0: length at byte offset 1 is longer than 5 bytes"},
        {{0x08, 0xff}, 2, "field 1 at byte offset 0: truncated varint at byte offset 1"},
        {{0x0b, 0x0c}, 2, "field 1 at byte offset 0: wire type 3 (start group) is not supported"},
        {{0x0c}, 1, "field 1 at byte offset 0: wire type 4 (end group) is not supported"},
        {{0x0e}, 1, "field 1 at byte offset 0: wire type 6 is invalid"},
        {{0x0f}, 1, "field 1 at byte offset 0: wire type 7 is invalid"},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        obi_pb_reader r = obi_pb_reader_of(cases[i].bytes, cases[i].len);
        assert_fails_with(err, obi_pb_next(&r, &f, &err), -EINVAL, cases[i].needle);
    }
}

static void test_nested_readers_give_offsets_in_the_whole_message(void **state)
{
    (void)state;
    /* field 1 { field 2 { field 3: truncated varint } } */
    static const uint8_t data[] = {0x0a, 0x04, 0x12, 0x02, 0x18, 0x80};
    obi_pb_reader outer = obi_pb_reader_of(data, sizeof data);
    obi_pb_field f;
    assert_int_equal(obi_pb_next(&outer, &f, NULL), 1);
    obi_pb_reader middle = obi_pb_reader_nested(&outer, &f);
    assert_int_equal(obi_pb_next(&middle, &f, NULL), 1);
    assert_int_equal(f.offset, 2);
    obi_pb_reader inner = obi_pb_reader_nested(&middle, &f);
    obi_error *err = NULL;
    assert_fails_with(err, obi_pb_next(&inner, &f, &err), -EINVAL,
                      "field 3 at byte offset 4: truncated varint at byte offset 5");
}

static void test_writer_frames_a_len_field(void **state)
{
    (void)state;
    uint8_t buf[OBI_PB_LEN_HEADER_MAX];
    assert_int_equal(obi_pb_put_len_header(buf, 1, 3), 2);
    assert_int_equal(buf[0], 0x0a);
    assert_int_equal(buf[1], 3);
    assert_int_equal(obi_pb_put_len_header(buf, 16, 300), 4);
    static const uint8_t expected[] = {0x82, 0x01, 0xac, 0x02};
    assert_memory_equal(buf, expected, sizeof expected);
}

/* ---- the check, driven by descriptors ---------------------------------------------------------
 */

static void test_check_skips_unknown_fields_of_every_wire_type(void **state)
{
    (void)state;
    /* command_args "a"; 20: varint; 21: fixed64; 22: "xyz"; 23: fixed32; command_args "b" */
    static const uint8_t data[] = {0x12, 0x01, 'a', 0xa0, 0x01, 0x05, 0xa9, 0x01, 1,   2,   3,
                                   4,    5,    6,   7,    8,    0xb2, 0x01, 0x03, 'x', 'y', 'z',
                                   0xbd, 0x01, 1,   2,    3,    4,    0x12, 0x01, 'b'};
    assert_ok(
        obi_pb_check(&tvix__build__v1__build_request__descriptor, data, sizeof data, err_ptr_));
    /* An unknown field's bytes are never read as a string: not UTF-8 is fine there. */
    static const uint8_t binary[] = {0xb2, 0x01, 0x02, 0xff, 0x00};
    assert_ok(
        obi_pb_check(&tvix__build__v1__build_request__descriptor, binary, sizeof binary, err_ptr_));
    /* But an unknown group is refused, and named by number. */
    static const uint8_t group[] = {0x12, 0x01, 'a', 0xa3, 0x01};
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_pb_check(&tvix__build__v1__build_request__descriptor, group, sizeof group, &err),
        -EINVAL, "field 20 at byte offset 3: wire type 3 (start group)");
}

static void test_check_names_wrong_wire_types(void **state)
{
    (void)state;
    obi_error *err = NULL;
    /* working_dir as a varint */
    static const uint8_t as_varint[] = {0x18, 0x01};
    assert_fails_with(err,
                      obi_pb_check(&tvix__build__v1__build_request__descriptor, as_varint,
                                   sizeof as_varint, &err),
                      -EINVAL,
                      "working_dir (field 3) at byte offset 0: wire type 0 (varint), expected 2 "
                      "(length-delimited)");
    /* constraints { network_access as fixed32 } */
    static const uint8_t as_fixed[] = {0x42, 0x05, 0x25, 1, 0, 0, 0};
    assert_fails_with(
        err,
        obi_pb_check(&tvix__build__v1__build_request__descriptor, as_fixed, sizeof as_fixed, &err),
        -EINVAL,
        "constraints.network_access (field 4) at byte offset 2: wire type 5 "
        "(32-bit), expected 0 (varint)");
}

static void test_check_counts_indexes_across_interleaved_fields(void **state)
{
    (void)state;
    /* command_args "a", outputs "o", command_args "b", outputs "\xff" */
    static const uint8_t data[] = {0x12, 0x01, 'a', 0x32, 0x01, 'o',
                                   0x12, 0x01, 'b', 0x32, 0x01, 0xff};
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_pb_check(&tvix__build__v1__build_request__descriptor, data, sizeof data, &err),
        -EINVAL, "outputs[1] (field 6) at byte offset 9: string is not valid UTF-8");
}

static void test_check_names_the_path_and_offset_deep_inside(void **state)
{
    (void)state;
    /* Build { build_request { constraints { available_ro_paths "/a", available_ro_paths
     * "/\0" } } } */
    static const uint8_t data[] = {0x0a, 0x0a, 0x42, 0x08, 0x1a, 0x02,
                                   '/',  'a',  0x1a, 0x02, '/',  0x00};
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_pb_check(&tvix__build__v1__build__descriptor, data, sizeof data, &err), -EINVAL,
        "build_request.constraints.available_ro_paths[1] (field 3) at byte offset 8: string "
        "contains NUL");
    /* ... and where a structural error inside is: outputs[1] { symlink { truncated } } */
    static const uint8_t outputs[] = {0x12, 0x00, 0x12, 0x03, 0x1a, 0x01, 0x0a};
    assert_fails_with(
        err, obi_pb_check(&tvix__build__v1__build__descriptor, outputs, sizeof outputs, &err),
        -EINVAL,
        "outputs[1].symlink.name (field 1) at byte offset 6: truncated varint at byte "
        "offset 7");
    /* A broken key inside names the message it is in. */
    static const uint8_t key[] = {0x0a, 0x03, 0x42, 0x01, 0x80};
    assert_fails_with(err, obi_pb_check(&tvix__build__v1__build__descriptor, key, sizeof key, &err),
                      -EINVAL, "build_request.constraints: truncated varint at byte offset 4");
}

static void test_check_takes_repeated_scalars_packed_or_not(void **state)
{
    (void)state;
    /* outputs_needles { needles [1, 300] packed } , outputs_needles { needles 1, needles 2 } */
    static const uint8_t data[] = {0x1a, 0x05, 0x0a, 0x03, 0x01, 0xac, 0x02,
                                   0x1a, 0x04, 0x08, 0x01, 0x08, 0x02};
    assert_ok(obi_pb_check(&tvix__build__v1__build__descriptor, data, sizeof data, err_ptr_));
    /* A packed list whose last varint is cut. */
    static const uint8_t cut[] = {0x1a, 0x04, 0x0a, 0x02, 0x01, 0x80};
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_pb_check(&tvix__build__v1__build__descriptor, cut, sizeof cut, &err), -EINVAL,
        "outputs_needles[0].needles[0] (field 1) at byte offset 2: truncated varint at byte "
        "offset 5");
}

/* A malformed value of a known field: the error names the field, where its key is, and where
 * inside it the value went wrong. */
static void test_check_names_the_field_of_a_malformed_value(void **state)
{
    (void)state;
    static const struct {
        uint8_t bytes[16];
        size_t len;
        const char *needle;
    } cases[] = {
        /* constraints { min_memory: a varint of eleven bytes } */
        {{0x42, 0x0c, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         14,
         "constraints.min_memory (field 2) at byte offset 2: varint at byte offset 3 overflows "
         "64 bits"},
        /* constraints { min_memory: a varint cut short } */
        {{0x42, 0x02, 0x10, 0x80},
         4,
         "constraints.min_memory (field 2) at byte offset 2: truncated varint at byte offset 3"},
        /* command_args "a", command_args: length 9 with 1 byte left */
        {{0x12, 0x01, 'a', 0x12, 0x09, 'b'},
         6,
         "command_args[1] (field 2) at byte offset 3: length 9 at byte offset 4 exceeds the "
         "remaining 1 bytes"},
        /* constraints: its length cut short */
        {{0x42, 0x80},
         2,
         "constraints (field 8) at byte offset 0: truncated varint at byte offset 1"},
        /* a key cut short after a good field */
        {{0x1a, 0x01, 'w', 0x80}, 4, "truncated varint at byte offset 3"},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        obi_error *err = NULL;
        assert_fails_with(err,
                          obi_pb_check(&tvix__build__v1__build_request__descriptor, cases[i].bytes,
                                       cases[i].len, &err),
                          -EINVAL, cases[i].needle);
    }
}

/* A message that holds itself (protoc-c's layout, written out), for the depth limit. */
static const ProtobufCMessageDescriptor loop_descriptor;
static const ProtobufCFieldDescriptor loop_fields[] = {
    {"next", 1, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_MESSAGE, 0, 0, &loop_descriptor, NULL, 0, 0,
     NULL, NULL},
};
static const unsigned loop_fields_by_name[] = {0};
static const ProtobufCIntRange loop_ranges[] = {{1, 0}, {0, 1}};
static const ProtobufCMessageDescriptor loop_descriptor = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    "test.Loop",
    "Loop",
    "Test__Loop",
    "test",
    sizeof(ProtobufCMessage) + sizeof(void *),
    1,
    loop_fields,
    loop_fields_by_name,
    1,
    loop_ranges,
    NULL,
    NULL,
    NULL,
    NULL,
};

/* depth messages, each the only field of the one around it; returns the length. */
static size_t nest(uint8_t *out, size_t depth)
{
    size_t len = 0;
    for (size_t i = 0; i < depth; i++) {
        uint8_t header[OBI_PB_LEN_HEADER_MAX];
        size_t h = obi_pb_put_len_header(header, 1, len);
        memmove(out + h, out, len);
        memcpy(out, header, h);
        len += h;
    }
    return len;
}

static void test_check_refuses_messages_nested_too_deep(void **state)
{
    (void)state;
    uint8_t data[4 * (OBI_PB_DEPTH_MAX + 1)];
    size_t len = nest(data, OBI_PB_DEPTH_MAX);
    assert_ok(obi_pb_check(&loop_descriptor, data, len, err_ptr_));
    assert_true(obi_pb_is_canonical(&loop_descriptor, data, len));
    len = nest(data, OBI_PB_DEPTH_MAX + 1);
    char needle[80];
    snprintf(needle, sizeof needle,
             "next (field 1) at byte offset %zu: messages nested deeper than %d", len - 2,
             OBI_PB_DEPTH_MAX);
    obi_error *err = NULL;
    assert_fails_with(err, obi_pb_check(&loop_descriptor, data, len, &err), -EINVAL, needle);
    assert_false(obi_pb_is_canonical(&loop_descriptor, data, len));
}

static void test_unpack_checks_then_unpacks(void **state)
{
    (void)state;
    static const uint8_t good[] = {0x0a, 0x03, 0x0a, 0x01, 'd'};
    ProtobufCMessage *msg = NULL;
    assert_ok(
        obi_pb_unpack(&tvix__castore__v1__node__descriptor, good, sizeof good, &msg, err_ptr_));
    Tvix__Castore__V1__Node *node = (Tvix__Castore__V1__Node *)msg;
    assert_int_equal(node->node_case, TVIX__CASTORE__V1__NODE__NODE_DIRECTORY);
    assert_int_equal(node->directory->name.len, 1);
    protobuf_c_message_free_unpacked(msg, NULL);
    msg = NULL;
    static const uint8_t bad[] = {0x0a, 0x03, 0x0a, 0x05, 'd'};
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_pb_unpack(&tvix__castore__v1__node__descriptor, bad, sizeof bad, &msg, &err),
        -EINVAL, "directory.name (field 1) at byte offset 2: length 5");
    assert_null(msg);
    /* What protobuf-c refuses the check refuses first, so that no refusal is left over to be
     * taken for running out of memory (fuzz_pb_wire found this one: an unknown field 1000
     * whose key takes six bytes). */
    static const uint8_t long_key[] = {0xc0, 0xbe, 0x80, 0x80, 0x80, 0x00, 0x01};
    assert_fails_with(
        err,
        obi_pb_unpack(&tvix__castore__v1__node__descriptor, long_key, sizeof long_key, &msg, &err),
        -EINVAL, "key at byte offset 0 is longer than 5 bytes");
    assert_null(protobuf_c_message_unpack(&tvix__castore__v1__node__descriptor, NULL,
                                          sizeof long_key, long_key));
}

static void test_utf8_rules(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool valid;
    } cases[] = {
        {"plain", true},
        {"\xc3\xa9", true},
        {"\xe2\x82\xac", true},
        {"\xf0\x9f\x98\x80", true},
        {"\xf4\x8f\xbf\xbf", true},
        {"\xc0\xaf", false},
        {"\xe0\x80\xaf", false},
        {"\xed\xa0\x80", false},
        {"\xf4\x90\x80\x80", false},
        {"\xc3", false},
        {"\x80", false},
        {"\xff", false},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++)
        assert_int_equal(obi_utf8_valid((const uint8_t *)cases[i].s, strlen(cases[i].s)),
                         cases[i].valid);
}

/* ---- canonical form ------------------------------------------------------------------------- */

/* A Build with a request, nested nodes, packed needles, a bool, a uint64 and empty messages. */
static uint8_t *packed_build(size_t *len)
{
    Tvix__Build__V1__BuildRequest__BuildConstraints constraints;
    tvix__build__v1__build_request__build_constraints__init(&constraints);
    constraints.system = "x86_64-linux";
    constraints.min_memory = 300;
    constraints.provide_bin_sh = 1;
    char *args[] = {"sh", "-c", "true"};
    Tvix__Build__V1__BuildRequest req;
    tvix__build__v1__build_request__init(&req);
    req.command_args = args;
    req.n_command_args = 3;
    req.working_dir = "build";
    req.constraints = &constraints;
    Tvix__Castore__V1__FileNode file;
    tvix__castore__v1__file_node__init(&file);
    file.name = (ProtobufCBinaryData){3, (uint8_t *)"out"};
    file.size = 5;
    file.executable = 1;
    Tvix__Castore__V1__Node out;
    tvix__castore__v1__node__init(&out);
    out.node_case = TVIX__CASTORE__V1__NODE__NODE_FILE;
    out.file = &file;
    Tvix__Castore__V1__Node *outputs[] = {&out};
    uint64_t needles[] = {0, 2};
    Tvix__Build__V1__Build__OutputNeedles found, none;
    tvix__build__v1__build__output_needles__init(&found);
    tvix__build__v1__build__output_needles__init(&none);
    found.needles = needles;
    found.n_needles = 2;
    Tvix__Build__V1__Build__OutputNeedles *all[] = {&found, &none};
    Tvix__Build__V1__Build build;
    tvix__build__v1__build__init(&build);
    build.build_request = &req;
    build.outputs = outputs;
    build.n_outputs = 1;
    build.outputs_needles = all;
    build.n_outputs_needles = 2;
    *len = tvix__build__v1__build__get_packed_size(&build);
    uint8_t *data = malloc(*len);
    assert_non_null(data);
    tvix__build__v1__build__pack(&build, data);
    return data;
}

static void test_canonical_is_what_protobuf_c_packs(void **state)
{
    (void)state;
    size_t len = 0;
    cleanup_free uint8_t *data = packed_build(&len);
    assert_true(obi_pb_is_canonical(&tvix__build__v1__build__descriptor, data, len));
    assert_true(obi_pb_is_canonical(&tvix__build__v1__build__descriptor, data, 0));
    static const uint8_t empty_oneof_member[] = {0x12, 0x00};
    assert_true(obi_pb_is_canonical(&tvix__castore__v1__node__descriptor, empty_oneof_member,
                                    sizeof empty_oneof_member));
    const struct {
        const ProtobufCMessageDescriptor *desc;
        uint8_t bytes[8];
        size_t len;
    } others[] = {
        /* working_dir "" written out (a default) */
        {&tvix__build__v1__build_request__descriptor, {0x1a, 0x00}, 2},
        /* constraints { network_access false } */
        {&tvix__build__v1__build_request__descriptor, {0x42, 0x02, 0x20, 0x00}, 4},
        /* constraints { provide_bin_sh 2 } (a bool is 0 or 1) */
        {&tvix__build__v1__build_request__descriptor, {0x42, 0x02, 0x28, 0x02}, 4},
        /* constraints { min_memory 1 in two bytes } */
        {&tvix__build__v1__build_request__descriptor, {0x42, 0x03, 0x10, 0x81, 0x00}, 5},
        /* a key in two bytes */
        {&tvix__build__v1__build_request__descriptor, {0x9a, 0x00, 0x01, 'a'}, 4},
        /* inputs_dir before working_dir */
        {&tvix__build__v1__build_request__descriptor, {0x2a, 0x01, 'i', 0x1a, 0x01, 'w'}, 6},
        /* working_dir twice */
        {&tvix__build__v1__build_request__descriptor, {0x1a, 0x01, 'a', 0x1a, 0x01, 'b'}, 6},
        /* an unknown field */
        {&tvix__build__v1__build_request__descriptor, {0xa0, 0x01, 0x01}, 3},
        /* needles unpacked, then an empty packed list */
        {&tvix__build__v1__build__descriptor, {0x1a, 0x02, 0x08, 0x01}, 4},
        {&tvix__build__v1__build__descriptor, {0x1a, 0x02, 0x0a, 0x00}, 4},
        /* a packed list with a long varint */
        {&tvix__build__v1__build__descriptor, {0x1a, 0x04, 0x0a, 0x02, 0x81, 0x00}, 6},
        /* a string with a NUL or not UTF-8 */
        {&tvix__build__v1__build_request__descriptor, {0x1a, 0x01, 0x00}, 3},
        {&tvix__build__v1__build_request__descriptor, {0x1a, 0x01, 0xff}, 3},
        /* truncated */
        {&tvix__build__v1__build_request__descriptor, {0x1a, 0x02, 'a'}, 3},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(others); i++) {
        if (obi_pb_is_canonical(others[i].desc, others[i].bytes, others[i].len))
            print_error("case %zu is taken as canonical\n", i);
        assert_false(obi_pb_is_canonical(others[i].desc, others[i].bytes, others[i].len));
    }
}

/* Each way of departing from the canonical form is named with the field, its number, the byte
 * offset of its key and what is wrong; obi_pb_is_canonical says no to each. */
static void test_canonical_check_names_the_field_and_offset_that_depart(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *dir = &tvix__castore__v1__directory__descriptor;
    const ProtobufCMessageDescriptor *req = &tvix__build__v1__build_request__descriptor;
    const ProtobufCMessageDescriptor *build = &tvix__build__v1__build__descriptor;
    const ProtobufCMessageDescriptor *node = &tvix__castore__v1__node__descriptor;
    const struct {
        const ProtobufCMessageDescriptor *desc;
        uint8_t bytes[12];
        size_t len;
        const char *needle;
    } cases[] = {
        /* files { name "a" }, directories { name "b" } */
        {dir,
         {0x12, 0x03, 0x0a, 0x01, 'a', 0x0a, 0x03, 0x0a, 0x01, 'b'},
         10,
         "directories[0] (field 1) at byte offset 5: comes after field 2 (fields go in number "
         "order)"},
        /* files { size 1, name "a" } */
        {dir,
         {0x12, 0x05, 0x18, 0x01, 0x0a, 0x01, 'a'},
         7,
         "files[0].name (field 1) at byte offset 4: comes after field 3"},
        /* directories { name "a" }, files { name "b" }, directories { name "c" } */
        {dir,
         {0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x00, 0x0a, 0x02, 0x0a, 0x00},
         11,
         "directories[1] (field 1) at byte offset 7: comes after field 2"},
        /* Node { directory { name "a" }, file { name "b" } } */
        {node,
         {0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x03, 0x0a, 0x01, 'b'},
         10,
         "file (field 2) at byte offset 5: a second member of its oneof"},
        {req,
         {0x1a, 0x01, 'a', 0x1a, 0x01, 'b'},
         6,
         "working_dir (field 3) at byte offset 3: occurs more than once"},
        {req,
         {0x1a, 0x00},
         2,
         "working_dir (field 3) at byte offset 0: holds its default value, which protobuf-c "
         "does not write"},
        {req,
         {0x42, 0x02, 0x20, 0x00},
         4,
         "constraints.network_access (field 4) at byte offset 2: holds its default value"},
        {req,
         {0x9a, 0x00, 0x01, 'a'},
         4,
         "working_dir (field 3) at byte offset 0: its key is a varint longer than it needs to be"},
        {req,
         {0x1a, 0x81, 0x00, 'a'},
         4,
         "working_dir (field 3) at byte offset 0: its length is a varint longer than it needs"},
        {req,
         {0x42, 0x03, 0x10, 0x81, 0x00},
         5,
         "constraints.min_memory (field 2) at byte offset 2: its value is a varint longer than "
         "it needs"},
        {req,
         {0x42, 0x02, 0x28, 0x02},
         4,
         "constraints.provide_bin_sh (field 5) at byte offset 2: 2 is out of range for a bool"},
        {req,
         {0x1a, 0x01, 'w', 0xa0, 0x01, 0x01},
         6,
         "field 20 at byte offset 3: not a field of tvix.build.v1.BuildRequest"},
        {req,
         {0x18, 0x01},
         2,
         "working_dir (field 3) at byte offset 0: wire type 0 (varint), expected 2 "
         "(length-delimited)"},
        {build,
         {0x1a, 0x02, 0x08, 0x01},
         4,
         "outputs_needles[0].needles[0] (field 1) at byte offset 2: wire type 0 (varint), "
         "expected 2 (length-delimited, packed)"},
        {build,
         {0x1a, 0x02, 0x0a, 0x00},
         4,
         "outputs_needles[0].needles[0] (field 1) at byte offset 2: an empty packed list"},
        {build,
         {0x1a, 0x05, 0x0a, 0x03, 0x01, 0x81, 0x00},
         7,
         "outputs_needles[0].needles[0] (field 1) at byte offset 2: the varint at byte offset 5 "
         "is longer than it needs to be"},
        {req, {0x1a, 0x01, 0x00}, 3, "working_dir (field 3) at byte offset 0: string contains NUL"},
        {req,
         {0x1a, 0x02, 'a'},
         3,
         "working_dir (field 3) at byte offset 0: length 2 at byte offset 1 exceeds the "
         "remaining 1 bytes"},
        {req, {0x1a, 0x01, 'w', 0x80}, 4, "truncated varint at byte offset 3"},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        obi_error *err = NULL;
        assert_fails_with(err,
                          obi_pb_check_canonical(cases[i].desc, cases[i].bytes, cases[i].len, &err),
                          -EINVAL, cases[i].needle);
        assert_false(obi_pb_is_canonical(cases[i].desc, cases[i].bytes, cases[i].len));
    }
    size_t len = 0;
    cleanup_free uint8_t *data = packed_build(&len);
    assert_ok(obi_pb_check_canonical(build, data, len, err_ptr_));
}

/* Every single-byte change of a packed Build: when it is taken as canonical, it passes the
 * check and protobuf-c packs what it unpacks to the very same bytes. */
static void test_canonical_means_protobuf_c_repacks_it_unchanged(void **state)
{
    (void)state;
    size_t len = 0;
    cleanup_free uint8_t *data = packed_build(&len);
    cleanup_free uint8_t *mutant = malloc(len);
    cleanup_free uint8_t *again = malloc(len);
    static const uint8_t values[] = {0x00, 0x01, 0x02, 0x03, 0x08, 0x0a, 0x10, 0x12, 0x18,
                                     0x1a, 0x20, 0x28, 0x2c, 0x7f, 0x80, 0xac, 0xff};
    size_t canonical = 0, other = 0;
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t v = 0; v < sizeof values; v++) {
            memcpy(mutant, data, len);
            mutant[pos] = values[v];
            if (!obi_pb_is_canonical(&tvix__build__v1__build__descriptor, mutant, len)) {
                other++;
                continue;
            }
            ProtobufCMessage *msg = NULL;
            assert_ok(
                obi_pb_unpack(&tvix__build__v1__build__descriptor, mutant, len, &msg, err_ptr_));
            assert_int_equal(protobuf_c_message_get_packed_size(msg), len);
            protobuf_c_message_pack(msg, again);
            protobuf_c_message_free_unpacked(msg, NULL);
            if (memcmp(again, mutant, len) != 0)
                print_error("mutant %zu=%02x is not repacked unchanged\n", pos, values[v]);
            assert_memory_equal(again, mutant, len);
            canonical++;
        }
    }
    assert_true(canonical > len); /* the unchanged byte, and many changed strings and numbers */
    assert_true(other > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varints_round_trip_at_every_length),
        cmocka_unit_test(test_varint_of_ten_bytes_overflowing_64_bits_is_refused),
        cmocka_unit_test(test_truncated_varint_names_where_it_starts),
        cmocka_unit_test(test_non_minimal_varints_are_read_and_flagged),
        cmocka_unit_test(test_keys_refuse_field_numbers_out_of_range_and_long_keys),
        cmocka_unit_test(test_next_reads_every_wire_type),
        cmocka_unit_test(test_values_refuse_truncation_groups_and_invalid_wire_types),
        cmocka_unit_test(test_nested_readers_give_offsets_in_the_whole_message),
        cmocka_unit_test(test_writer_frames_a_len_field),
        cmocka_unit_test(test_check_skips_unknown_fields_of_every_wire_type),
        cmocka_unit_test(test_check_names_wrong_wire_types),
        cmocka_unit_test(test_check_counts_indexes_across_interleaved_fields),
        cmocka_unit_test(test_check_names_the_path_and_offset_deep_inside),
        cmocka_unit_test(test_check_takes_repeated_scalars_packed_or_not),
        cmocka_unit_test(test_check_names_the_field_of_a_malformed_value),
        cmocka_unit_test(test_check_refuses_messages_nested_too_deep),
        cmocka_unit_test(test_unpack_checks_then_unpacks),
        cmocka_unit_test(test_utf8_rules),
        cmocka_unit_test(test_canonical_is_what_protobuf_c_packs),
        cmocka_unit_test(test_canonical_check_names_the_field_and_offset_that_depart),
        cmocka_unit_test(test_canonical_means_protobuf_c_repacks_it_unchanged),
    };
    return cmocka_run_group_tests_name("pb_wire", tests, NULL, NULL);
}
