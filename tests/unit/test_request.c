/*
 * BuildRequest model: every validation rule of build.md (one table row each, with the accepted
 * neighbour where there is one), errors naming field and index, the scratch-path lookup, copy,
 * and the protobuf binary and protobuf-JSON codecs (round trips, both field-name styles,
 * refusals that name the field).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/json_util.h"
#include "ocibuild/request.h"
#include "ocibuild/snix_build.h"
#include "request_fixture.h"
#include "build.pb-c.h"
#include "test_helpers.h"

/* Asserts that req fails validation with a message containing needle; frees req. */
static void assert_invalid(obi_build_request *req, const char *needle)
{
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_request_validate(req, &err), -EINVAL, needle);
    obi_build_request_free(req);
}

static void assert_valid(obi_build_request *req)
{
    assert_ok(obi_build_request_validate(req, err_ptr_));
    obi_build_request_free(req);
}

/* ---- validation ---- */

static void test_request_clean_path_rules(void **state)
{
    (void)state;
    static const char *const clean[] = {"a", "a/b", "nix/store", "a.b/..c/...", ".x"};
    static const char *const unclean[] = {"",   "/",   "/a",  "a/",     "a//b", ".",
                                          "..", "./a", "a/.", "a/../b", "a/..", "../a"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(clean); i++)
        assert_true(obi_path_is_clean_relative(clean[i]));
    for (size_t i = 0; i < OBI_ARRAY_SIZE(unclean); i++) {
        if (obi_path_is_clean_relative(unclean[i]))
            print_error("'%s' was taken as clean\n", unclean[i]);
        assert_false(obi_path_is_clean_relative(unclean[i]));
    }
}

static void test_request_find_scratch_prefers_longest_match(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    FIXTURE_SET(req, scratch_paths, "nix", "nix/store", "nix/store/x/y");
    size_t index = 99;
    const char *rest = NULL;
    assert_int_equal(obi_build_request_find_scratch(req, "nix/store/x/z", &index, &rest), 0);
    assert_int_equal(index, 1);
    assert_string_equal(rest, "x/z");
    assert_int_equal(obi_build_request_find_scratch(req, "nix/store/x/y/w", &index, &rest), 0);
    assert_int_equal(index, 2);
    assert_string_equal(rest, "w");
    assert_int_equal(obi_build_request_find_scratch(req, "nix/other", &index, &rest), 0);
    assert_int_equal(index, 0);
    assert_string_equal(rest, "other");
    assert_int_equal(obi_build_request_find_scratch(req, "nix/store", &index, &rest), 0);
    assert_int_equal(index, 1);
    assert_string_equal(rest, "");
    assert_int_equal(obi_build_request_find_scratch(req, "build/x", &index, &rest), -ENOENT);
}

static void test_request_rejects_env_value_with_nul(void **state)
{
    (void)state;
    obi_build_request *req = fixture_request();
    obi_bytes_clear(&req->environment_vars[1].value);
    obi_bytes_set(&req->environment_vars[1].value, "a\0b", 3);
    assert_invalid(req, "environment_vars[1]: value of \"out\" contains NUL");
}

static void test_request_accepts_env_value_with_any_other_byte(void **state)
{
    (void)state;
    obi_build_request *req = fixture_request();
    obi_bytes_clear(&req->environment_vars[1].value);
    obi_bytes_set(&req->environment_vars[1].value, "=\n\xff", 3);
    assert_valid(req);
}

static void test_request_accepts_missing_constraints(void **state)
{
    (void)state;
    obi_build_request *req = fixture_request();
    req->has_constraints = false;
    fixture_set_string(&req->constraints.system, "");
    assert_valid(req);
}

/*
 * The validation rules as one table: each row edits the fixture (up to three fields, in order)
 * and names the message the edited request fails with, or NULL where it must stay valid. Every
 * row is its own cmocka test, named by the row.
 */
typedef enum request_field {
    EDIT_NONE = 0,
    EDIT_COMMAND_ARGS,
    EDIT_WORKING_DIR,
    EDIT_INPUTS_DIR,
    EDIT_SCRATCH_PATHS,
    EDIT_OUTPUTS,
    EDIT_FILES, /* PATH, CONTENTS pairs */
    EDIT_ENV,   /* KEY, VALUE pairs */
    EDIT_SYSTEM,
    EDIT_RO_PATHS,
    EDIT_INPUTS, /* node names, kinds as fixture_set_inputs makes them */
} request_field;

typedef struct request_edit {
    request_field field;
    const char *const *values; /* NULL-terminated */
} request_edit;

typedef struct request_case {
    const char *name;
    request_edit edits[3];
    const char *needle; /* NULL: the edited request is valid */
} request_case;

#define V(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NONE ((const char *const[]){NULL})

static request_case REQUEST_CASES[] = {
    {"test_request_fixture_is_valid", {{0}}, NULL},
    {"test_request_rejects_empty_command_args",
     {{EDIT_COMMAND_ARGS, NONE}},
     "command_args: must not be empty"},
    {"test_request_rejects_unclean_working_dir",
     {{EDIT_WORKING_DIR, V("build/../etc")}},
     "working_dir: \"build/../etc\" is not a clean path"},
    {"test_request_rejects_absolute_working_dir",
     {{EDIT_WORKING_DIR, V("/build")}},
     "working_dir: \"/build\" is not relative"},
    {"test_request_accepts_empty_working_and_inputs_dir",
     {{EDIT_WORKING_DIR, V("")}, {EDIT_INPUTS_DIR, V("")}},
     NULL},
    {"test_request_rejects_unclean_inputs_dir",
     {{EDIT_INPUTS_DIR, V("nix//store")}},
     "inputs_dir: \"nix//store\" is not a clean path"},
    {"test_request_rejects_unclean_scratch_path",
     {{EDIT_SCRATCH_PATHS, V("build", "nix/./store")}},
     "scratch_paths[1]: \"nix/./store\" is not a clean path"},
    {"test_request_rejects_scratch_path_with_trailing_slash",
     {{EDIT_SCRATCH_PATHS, V("build/", "nix/store")}},
     "scratch_paths[0]: \"build/\" is not a clean path"},
    {"test_request_rejects_empty_scratch_path",
     {{EDIT_SCRATCH_PATHS, V("", "nix/store")}},
     "scratch_paths[0]: must not be empty"},
    {"test_request_rejects_absolute_scratch_path",
     {{EDIT_SCRATCH_PATHS, V("/build", "nix/store")}},
     "scratch_paths[0]: \"/build\" is not relative"},
    {"test_request_rejects_unsorted_scratch_paths",
     {{EDIT_SCRATCH_PATHS, V("nix/store", "build")}},
     "scratch_paths[1]: \"build\" sorts before the previous \"nix/store\""},
    {"test_request_rejects_duplicate_scratch_paths",
     {{EDIT_SCRATCH_PATHS, V("build", "nix/store", "nix/store")}},
     "scratch_paths[2]: duplicate \"nix/store\""},
    {"test_request_rejects_unclean_output",
     {{EDIT_OUTPUTS, V("nix/store/a", "nix/store/b/../x")}},
     "outputs[1]: \"nix/store/b/../x\" is not a clean path"},
    {"test_request_rejects_absolute_output",
     {{EDIT_OUTPUTS, V("/nix/store/a")}},
     "outputs[0]: \"/nix/store/a\" is not relative"},
    {"test_request_rejects_unsorted_outputs",
     {{EDIT_OUTPUTS, V("nix/store/b", "nix/store/a")}},
     "outputs[1]: \"nix/store/a\" sorts before the previous \"nix/store/b\""},
    {"test_request_rejects_duplicate_outputs",
     {{EDIT_OUTPUTS, V("nix/store/a", "nix/store/a")}},
     "outputs[1]: duplicate \"nix/store/a\""},
    {"test_request_rejects_output_outside_scratch_paths",
     {{EDIT_OUTPUTS, V("nix/store/a", "out")}},
     "outputs[1]: \"out\" is not inside any scratch path"},
    {"test_request_matches_scratch_paths_by_whole_components",
     {{EDIT_OUTPUTS, V("nix/sto")}},
     "outputs[0]: \"nix/sto\" is not inside any scratch path"},
    {"test_request_scratch_path_is_not_a_name_prefix",
     {{EDIT_OUTPUTS, V("nix/storex/a")}},
     "outputs[0]: \"nix/storex/a\" is not inside any scratch path"},
    {"test_request_output_is_not_inside_a_shorter_name",
     {{EDIT_SCRATCH_PATHS, V("nix/sto")}, {EDIT_OUTPUTS, V("nix/store/x")}, {EDIT_FILES, NONE}},
     "outputs[0]: \"nix/store/x\" is not inside any scratch path"},
    {"test_request_accepts_output_equal_to_scratch_path",
     {{EDIT_OUTPUTS, V("build", "nix/store")}},
     NULL},
    {"test_request_rejects_unclean_additional_file",
     {{EDIT_FILES, V("build/a", "x", "build/./b", "y")}},
     "additional_files[1].path: \"build/./b\" is not a clean path"},
    {"test_request_rejects_unsorted_additional_files",
     {{EDIT_FILES, V("build/b", "x", "build/a", "y")}},
     "additional_files[1].path: \"build/a\" sorts before the previous"},
    {"test_request_rejects_additional_file_outside_scratch_paths",
     {{EDIT_FILES, V("etc/passwd", "x")}},
     "additional_files[0].path: \"etc/passwd\" is not inside any scratch path"},
    {"test_request_rejects_additional_file_that_is_a_scratch_path",
     {{EDIT_FILES, V("build", "x")}},
     "additional_files[0].path: \"build\" is not inside any scratch path"},
    {"test_request_rejects_empty_env_key",
     {{EDIT_ENV, V("", "x")}},
     "environment_vars[0]: key is empty"},
    {"test_request_rejects_env_key_with_equals",
     {{EDIT_ENV, V("A", "1", "A0", "2", "A1", "3", "A=B", "4")}},
     "environment_vars[3]: key \"A=B\" contains '='"},
    {"test_request_rejects_unsorted_env",
     {{EDIT_ENV, V("out", "1", "PATH", "2")}},
     "environment_vars[1]: key \"PATH\" sorts before the previous key \"out\""},
    {"test_request_rejects_duplicate_env_keys",
     {{EDIT_ENV, V("A", "1", "A", "2")}},
     "environment_vars[1]: duplicate key \"A\""},
    {"test_request_rejects_empty_system_when_constraints_set",
     {{EDIT_SYSTEM, V("")}},
     "constraints.system: must not be empty"},
    {"test_request_rejects_relative_ro_path",
     {{EDIT_RO_PATHS, V("/dev/kvm", "etc/ssl")}},
     "constraints.available_ro_paths[1]: \"etc/ssl\" is not absolute"},
    {"test_request_rejects_unclean_ro_path",
     {{EDIT_RO_PATHS, V("/dev/../etc")}},
     "constraints.available_ro_paths[0]: \"/dev/../etc\" is not a clean path"},
    {"test_request_rejects_root_as_ro_path",
     {{EDIT_RO_PATHS, V("/")}},
     "constraints.available_ro_paths[0]: \"/\" is not a clean path"},
    {"test_request_rejects_unsorted_ro_paths",
     {{EDIT_RO_PATHS, V("/etc/ssl", "/dev/kvm")}},
     "constraints.available_ro_paths[1]: \"/dev/kvm\" sorts before"},
    {"test_request_accepts_sorted_ro_paths", {{EDIT_RO_PATHS, V("/dev/kvm", "/etc/ssl")}}, NULL},
    {"test_request_rejects_invalid_input_node",
     {{EDIT_INPUTS, V("aaa-dep", "bad/name")}},
     "inputs[1]"},
    {"test_request_rejects_unsorted_inputs",
     {{EDIT_INPUTS, V("bbb-dep", "aaa-dep")}},
     "inputs[1]: name \"aaa-dep\" sorts before"},
    {"test_request_rejects_input_sorted_after_its_prefix",
     {{EDIT_INPUTS, V("abc", "ab")}},
     "inputs[1]: name \"ab\" sorts before"},
    {"test_request_rejects_duplicate_inputs",
     {{EDIT_INPUTS, V("aaa-dep", "aaa-dep")}},
     "inputs[1]: duplicate name \"aaa-dep\""},
    {"test_request_error_quotes_control_bytes",
     {{EDIT_OUTPUTS, V("nix/store/a\n/../b")}},
     "outputs[0]: \"nix/store/a\\x0a/../b\" is not a clean path"},
};

static void apply_edit(obi_build_request *req, const request_edit *edit)
{
    size_t n = 0;
    while (edit->values[n])
        n++;
    switch (edit->field) {
    case EDIT_NONE:
        break;
    case EDIT_COMMAND_ARGS:
        fixture_set_strings(&req->command_args, &req->n_command_args, edit->values);
        break;
    case EDIT_WORKING_DIR:
        fixture_set_string(&req->working_dir, edit->values[0]);
        break;
    case EDIT_INPUTS_DIR:
        fixture_set_string(&req->inputs_dir, edit->values[0]);
        break;
    case EDIT_SCRATCH_PATHS:
        fixture_set_strings(&req->scratch_paths, &req->n_scratch_paths, edit->values);
        break;
    case EDIT_OUTPUTS:
        fixture_set_strings(&req->outputs, &req->n_outputs, edit->values);
        break;
    case EDIT_FILES:
        fixture_set_files(req, n / 2, edit->values);
        break;
    case EDIT_ENV:
        fixture_set_env(req, n / 2, edit->values);
        break;
    case EDIT_SYSTEM:
        fixture_set_string(&req->constraints.system, edit->values[0]);
        break;
    case EDIT_RO_PATHS:
        fixture_set_strings(&req->constraints.available_ro_paths,
                            &req->constraints.n_available_ro_paths, edit->values);
        break;
    case EDIT_INPUTS:
        fixture_set_inputs(req, n, edit->values);
        break;
    }
}

static void run_request_case(void **state)
{
    const request_case *c = *state;
    obi_build_request *req = fixture_request();
    for (size_t i = 0; i < OBI_ARRAY_SIZE(c->edits) && c->edits[i].values; i++)
        apply_edit(req, &c->edits[i]);
    if (c->needle)
        assert_invalid(req, c->needle);
    else
        assert_valid(req);
}

/* ---- copy and protobuf ---- */

static void encode(const obi_build_request *req, uint8_t **out, size_t *len)
{
    assert_ok(obi_build_request_encode_pb(req, out, len, err_ptr_));
}

static void test_request_copy_is_deep_and_equal(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    FIXTURE_SET_RO_PATHS(req, "/dev/kvm");
    req->constraints.min_memory = 1 << 20;
    cleanup_build_request obi_build_request *copy = NULL;
    assert_ok(obi_build_request_copy(req, &copy, err_ptr_));
    cleanup_free uint8_t *a = NULL, *b = NULL;
    size_t alen, blen;
    encode(req, &a, &alen);
    encode(copy, &b, &blen);
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
    assert_ptr_not_equal(copy->outputs[0], req->outputs[0]);
}

static void test_request_pb_round_trip(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    req->constraints.min_memory = 123456789012ULL;
    req->constraints.network_access = true;
    req->constraints.provide_bin_sh = true;
    req->constraints.hide_sys = true;
    FIXTURE_SET_RO_PATHS(req, "/dev/kvm", "/etc/ssl");
    cleanup_free uint8_t *data = NULL, *again = NULL;
    size_t len, again_len;
    encode(req, &data, &len);
    cleanup_build_request obi_build_request *back = NULL;
    assert_ok(obi_build_request_decode_pb(data, len, &back, err_ptr_));
    assert_ok(obi_build_request_validate(back, err_ptr_));
    assert_int_equal(back->n_inputs, 2);
    assert_int_equal(back->inputs[1].kind, OBI_NODE_SYMLINK);
    assert_string_equal((const char *)back->inputs[1].target.data, "aaa-dep/bin");
    assert_string_equal(back->working_dir, "build");
    assert_string_equal(back->outputs[1], "nix/store/ddd-doc");
    assert_string_equal((const char *)back->environment_vars[1].value.data, "/nix/store/ccc-out");
    assert_true(back->has_constraints);
    assert_int_equal(back->constraints.min_memory, 123456789012ULL);
    assert_true(back->constraints.network_access);
    assert_true(back->constraints.hide_sys);
    assert_string_equal(back->constraints.available_ro_paths[1], "/etc/ssl");
    assert_string_equal((const char *)back->additional_files[0].contents.data, "{}");
    assert_string_equal(back->refscan_needles[1], "ccc");
    encode(back, &again, &again_len);
    assert_int_equal(len, again_len);
    assert_memory_equal(data, again, len);
}

static void test_request_pb_keeps_empty_constraints_present(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    fixture_set_string(&req->constraints.system, "");
    cleanup_free uint8_t *data = NULL;
    size_t len;
    encode(req, &data, &len);
    cleanup_build_request obi_build_request *back = NULL;
    assert_ok(obi_build_request_decode_pb(data, len, &back, err_ptr_));
    assert_true(back->has_constraints);
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_request_validate(back, &err), -EINVAL, "constraints.system");
}

static void test_request_pb_decodes_empty_message_to_defaults(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = NULL;
    assert_ok(obi_build_request_decode_pb((const uint8_t *)"", 0, &req, err_ptr_));
    assert_string_equal(req->working_dir, "");
    assert_string_equal(req->inputs_dir, "");
    assert_false(req->has_constraints);
    assert_int_equal(req->n_command_args, 0);
}

static void test_request_pb_rejects_nul_in_env_key(void **state)
{
    (void)state;
    /* environment_vars { key: "A\0B" } */
    static const uint8_t data[] = {0x12, 0x01, 'x', 0x3a, 0x05, 0x0a, 0x03, 'A', 0x00, 'B'};
    obi_build_request *req = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_request_decode_pb(data, sizeof data, &req, &err), -EINVAL,
                      "environment_vars[0].key (field 1) at byte offset 5: string contains NUL");
    assert_null(req);
}

static void test_request_pb_rejects_invalid_utf8(void **state)
{
    (void)state;
    /* command_args: "a", "\xff" */
    static const uint8_t data[] = {0x12, 0x01, 'a', 0x12, 0x01, 0xff};
    obi_build_request *req = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_request_decode_pb(data, sizeof data, &req, &err), -EINVAL,
                      "command_args[1] (field 2) at byte offset 3: string is not valid UTF-8");
    /* constraints { available_ro_paths: "/\xc0\xaf" } (overlong '/') */
    static const uint8_t overlong[] = {0x42, 0x05, 0x1a, 0x03, '/', 0xc0, 0xaf};
    assert_fails_with(
        err, obi_build_request_decode_pb(overlong, sizeof overlong, &req, &err), -EINVAL,
        "constraints.available_ro_paths[0] (field 3) at byte offset 2: string is not valid UTF-8");
    assert_null(req);
}

static void test_request_pb_rejects_truncated_input(void **state)
{
    (void)state;
    static const uint8_t data[] = {0x12, 0x05, 'a', 'b'};
    obi_build_request *req = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_request_decode_pb(data, sizeof data, &req, &err), -EINVAL,
                      "command_args[0] (field 2) at byte offset 0: length 5 at byte offset 1 "
                      "exceeds the remaining 2 bytes");
    assert_null(req);
}

/* One reader for every codec: what the castore decoder refused, this one refuses too. */
static void test_request_pb_rejects_varint_overflowing_64_bits(void **state)
{
    (void)state;
    /* constraints { min_memory: a 10-byte varint whose last byte carries bits past 63 } */
    static const uint8_t data[] = {0x42, 0x0b, 0x10, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    obi_build_request *req = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_request_decode_pb(data, sizeof data, &req, &err), -EINVAL,
                      "constraints.min_memory (field 2) at byte offset 2: varint at byte offset 3 "
                      "overflows 64 bits");
    assert_null(req);
}

static void test_request_pb_names_the_input_node_with_a_wrong_wire_type(void **state)
{
    (void)state;
    /* inputs { file: 1 } (a varint where a FileNode belongs) */
    static const uint8_t data[] = {0x0a, 0x02, 0x10, 0x01};
    obi_build_request *req = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_request_decode_pb(data, sizeof data, &req, &err), -EINVAL,
                      "inputs[0].file (field 2) at byte offset 2: wire type 0 (varint), expected 2 "
                      "(length-delimited)");
    assert_null(req);
}

static void test_request_pb_skips_unknown_fields(void **state)
{
    (void)state;
    /* command_args: "a", field 99 (varint) = 1 */
    static const uint8_t data[] = {0x12, 0x01, 'a', 0x98, 0x06, 0x01};
    cleanup_build_request obi_build_request *req = NULL;
    assert_ok(obi_build_request_decode_pb(data, sizeof data, &req, err_ptr_));
    assert_int_equal(req->n_command_args, 1);
}

static void test_build_pb_round_trip(void **state)
{
    (void)state;
    cleanup_build obi_build *build = obi_build_new();
    build->request = fixture_request();
    build->n_outputs = 2;
    build->outputs = calloc(2, sizeof *build->outputs);
    fixture_node(&build->outputs[0], OBI_NODE_DIRECTORY, "ccc-out", NULL);
    fixture_node(&build->outputs[1], OBI_NODE_FILE, "ddd-doc", NULL);
    build->outputs_needles = calloc(2, sizeof *build->outputs_needles);
    build->outputs_needles[0].needles = calloc(2, sizeof(uint64_t));
    build->outputs_needles[0].needles[0] = 0;
    build->outputs_needles[0].needles[1] = 1;
    build->outputs_needles[0].n_needles = 2;
    cleanup_free uint8_t *data = NULL, *again = NULL;
    size_t len, again_len;
    assert_ok(obi_build_encode_pb(build, &data, &len, err_ptr_));
    cleanup_build obi_build *back = NULL;
    assert_ok(obi_build_decode_pb(data, len, &back, err_ptr_));
    assert_non_null(back->request);
    assert_string_equal(back->request->outputs[0], "nix/store/ccc-out");
    assert_int_equal(back->n_outputs, 2);
    assert_int_equal(back->outputs[1].kind, OBI_NODE_FILE);
    assert_int_equal(back->outputs_needles[0].n_needles, 2);
    assert_int_equal(back->outputs_needles[0].needles[1], 1);
    assert_int_equal(back->outputs_needles[1].n_needles, 0);
    assert_ok(obi_build_encode_pb(back, &again, &again_len, err_ptr_));
    assert_int_equal(len, again_len);
    assert_memory_equal(data, again, len);
}

static void test_build_pb_rejects_needles_count_mismatch(void **state)
{
    (void)state;
    /* outputs: one symlink node {name "a", target "b"}; outputs_needles: two empty entries */
    static const uint8_t data[] = {0x12, 0x08, 0x1a, 0x06, 0x0a, 0x01, 'a',
                                   0x12, 0x01, 'b',  0x1a, 0x00, 0x1a, 0x00};
    obi_build *build = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_decode_pb(data, sizeof data, &build, &err), -EINVAL,
                      "outputs_needles: 2 entries for 1 outputs");
    assert_null(build);
}

static void test_build_pb_names_nested_request_fields(void **state)
{
    (void)state;
    /* build_request { command_args: "\xff" } */
    static const uint8_t data[] = {0x0a, 0x03, 0x12, 0x01, 0xff};
    obi_build *build = NULL;
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_build_decode_pb(data, sizeof data, &build, &err), -EINVAL,
        "build_request.command_args[0] (field 2) at byte offset 2: string is not valid UTF-8");
    assert_null(build);
}

static int decode_request(const uint8_t *data, size_t len, obi_error **err)
{
    obi_build_request *req = NULL;
    int r = obi_build_request_decode_pb(data, len, &req, err);
    obi_build_request_free(req);
    return r;
}

static int decode_build(const uint8_t *data, size_t len, obi_error **err)
{
    obi_build *build = NULL;
    int r = obi_build_decode_pb(data, len, &build, err);
    obi_build_free(build);
    return r;
}

/* A field added to build.proto is checked (wire type; UTF-8 and NUL for strings) with nothing
 * else to edit: this fails for a field the decoder lets through. */
static void test_request_pb_checks_every_field_of_the_proto(void **state)
{
    (void)state;
    /* BuildRequest: 10 fields, 12 below inputs (Node), 2 in EnvVar, 6 in BuildConstraints (with
     * ocibuild's hide_sys), 2 in AdditionalFile; 10 of them strings. */
    size_t tried = obi_test_pb_every_field_is_checked(&tvix__build__v1__build_request__descriptor,
                                                      decode_request);
    assert_int_equal(tried, 10 + 12 + 2 + 6 + 2 + 10);
    tried = obi_test_pb_every_field_is_checked(&tvix__build__v1__build__descriptor, decode_build);
    assert_int_equal(tried, 3 + (10 + 12 + 2 + 6 + 2 + 10) + 12 + 1);
}

/* Every single-byte corruption and every truncation of a valid encoding either decodes (and
 * then validates and re-encodes without trouble) or fails with a message; ASan checks the rest. */
static void test_request_pb_survives_mutations(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_free uint8_t *data = NULL;
    size_t len;
    encode(req, &data, &len);
    cleanup_free uint8_t *copy = malloc(len);
    size_t decoded = 0, refused = 0;
    for (size_t i = 0; i < len; i++) {
        for (int variant = 0; variant < 3; variant++) {
            memcpy(copy, data, len);
            size_t n = len;
            if (variant == 0)
                copy[i] ^= 0xff;
            else if (variant == 1)
                copy[i] = 0x80;
            else
                n = i;
            obi_build_request *back = NULL;
            obi_error *err = NULL;
            if (obi_build_request_decode_pb(copy, n, &back, &err) == 0) {
                decoded++;
                obi_error *verr = NULL;
                (void)obi_build_request_validate(back, &verr);
                obi_error_free(verr);
                uint8_t *again = NULL;
                size_t again_len;
                assert_ok(obi_build_request_encode_pb(back, &again, &again_len, err_ptr_));
                free(again);
                obi_build_request_free(back);
            } else {
                refused++;
                assert_non_null(err);
                assert_non_null(err->message);
                assert_null(back);
                obi_error_free(err);
            }
        }
    }
    assert_true(decoded > 0);
    assert_true(refused > 0);
}

/* ---- JSON ---- */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *json = json_loads(text, 0, &jerr);
    if (!json)
        print_error("bad test JSON: %s\n", jerr.text);
    assert_non_null(json);
    return json;
}

static void assert_json_fails(const char *text, const char *needle)
{
    cleanup_json json_t *json = parse(text);
    obi_build_request *req = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_request_from_json(json, &req, &err), -EINVAL, needle);
    assert_null(req);
}

static void test_request_json_round_trip(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    req->constraints.min_memory = 18446744073709551615ULL;
    req->constraints.provide_bin_sh = true;
    req->constraints.hide_sys = true;
    FIXTURE_SET_RO_PATHS(req, "/dev/kvm");
    cleanup_json json_t *json = obi_build_request_to_json(req);
    assert_non_null(json);
    assert_true(json_is_true(json_object_get(json_object_get(json, "constraints"), "hideSys")));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json, "constraints"), "minMemory")),
        "18446744073709551615");
    assert_null(json_object_get(json_object_get(json, "constraints"), "networkAccess"));
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(json, "environmentVars"), 1), "value")),
                        "L25peC9zdG9yZS9jY2Mtb3V0"); /* base64("/nix/store/ccc-out") */
    cleanup_build_request obi_build_request *back = NULL;
    assert_ok(obi_build_request_from_json(json, &back, err_ptr_));
    cleanup_json json_t *again = obi_build_request_to_json(back);
    assert_true(json_equal(json, again));
    cleanup_free uint8_t *a = NULL, *b = NULL;
    size_t alen, blen;
    encode(req, &a, &alen);
    encode(back, &b, &blen);
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
}

static void test_request_json_accepts_both_name_styles(void **state)
{
    (void)state;
    cleanup_json json_t *camel =
        parse("{\"commandArgs\":[\"sh\"],\"workingDir\":\"build\",\"scratchPaths\":[\"build\"],"
              "\"inputsDir\":\"nix/store\",\"outputs\":[\"build/out\"],"
              "\"environmentVars\":[{\"key\":\"A\",\"value\":\"eA==\"}],"
              "\"constraints\":{\"system\":\"x\",\"minMemory\":\"5\",\"availableRoPaths\":[\"/a\"],"
              "\"networkAccess\":true,\"provideBinSh\":true},"
              "\"additionalFiles\":[{\"path\":\"build/f\",\"contents\":\"eQ==\"}],"
              "\"refscanNeedles\":[\"n\"]}");
    cleanup_json json_t *snake =
        parse("{\"command_args\":[\"sh\"],\"working_dir\":\"build\",\"scratch_paths\":[\"build\"],"
              "\"inputs_dir\":\"nix/store\",\"outputs\":[\"build/out\"],"
              "\"environment_vars\":[{\"key\":\"A\",\"value\":\"eA==\"}],"
              "\"constraints\":{\"system\":\"x\",\"min_memory\":5,\"available_ro_paths\":[\"/a\"],"
              "\"network_access\":true,\"provide_bin_sh\":true},"
              "\"additional_files\":[{\"path\":\"build/f\",\"contents\":\"eQ==\"}],"
              "\"refscan_needles\":[\"n\"]}");
    cleanup_build_request obi_build_request *a = NULL, *b = NULL;
    assert_ok(obi_build_request_from_json(camel, &a, err_ptr_));
    assert_ok(obi_build_request_from_json(snake, &b, err_ptr_));
    assert_ok(obi_build_request_validate(a, err_ptr_));
    cleanup_json json_t *ja = obi_build_request_to_json(a);
    cleanup_json json_t *jb = obi_build_request_to_json(b);
    assert_true(json_equal(ja, jb));
    assert_true(json_equal(ja, camel)); /* the output is the canonical camelCase form */
    assert_int_equal(b->constraints.min_memory, 5);
    assert_true(b->constraints.provide_bin_sh);
    assert_string_equal((const char *)b->additional_files[0].contents.data, "y");
}

static void test_request_json_null_means_default(void **state)
{
    (void)state;
    cleanup_json json_t *json =
        parse("{\"commandArgs\":[\"sh\"],\"workingDir\":null,\"outputs\":null,"
              "\"constraints\":null}");
    cleanup_build_request obi_build_request *req = NULL;
    assert_ok(obi_build_request_from_json(json, &req, err_ptr_));
    assert_string_equal(req->working_dir, "");
    assert_int_equal(req->n_outputs, 0);
    assert_false(req->has_constraints);
}

static void test_request_json_rejects_unknown_fields(void **state)
{
    (void)state;
    assert_json_fails("{\"commandArgs\":[\"sh\"],\"bogus\":1}",
                      "BuildRequest: unknown field \"bogus\"");
    assert_json_fails("{\"constraints\":{\"system\":\"x\",\"cpus\":4}}",
                      "constraints: unknown field \"cpus\"");
    assert_json_fails("{\"environmentVars\":[{\"key\":\"a\"},{\"key\":\"b\",\"val\":\"\"}]}",
                      "environment_vars[1]: unknown field \"val\"");
    assert_json_fails("{\"additionalFiles\":[{\"path\":\"a\",\"content\":\"\"}]}",
                      "additional_files[0]: unknown field \"content\"");
}

static void test_request_json_rejects_field_given_twice(void **state)
{
    (void)state;
    assert_json_fails("{\"workingDir\":\"a\",\"working_dir\":\"b\"}",
                      "field working_dir given twice");
}

static void test_request_json_rejects_wrong_types(void **state)
{
    (void)state;
    assert_json_fails("[]", "BuildRequest: expected an object");
    assert_json_fails("{\"commandArgs\":\"sh\"}", "command_args: expected an array");
    assert_json_fails("{\"commandArgs\":[\"sh\",3]}", "command_args[1]: expected a string");
    assert_json_fails("{\"workingDir\":1}", "working_dir: expected a string");
    assert_json_fails("{\"constraints\":{\"networkAccess\":\"yes\"}}",
                      "constraints.network_access: expected true or false");
    assert_json_fails("{\"environmentVars\":{}}", "environment_vars: expected an array");
    assert_json_fails("{\"inputs\":[{}]}", "inputs[0]");
}

static void test_request_json_rejects_bad_base64(void **state)
{
    (void)state;
    assert_json_fails("{\"environmentVars\":[{\"key\":\"a\",\"value\":\"eA=\"}]}",
                      "environment_vars[0].value");
    assert_json_fails("{\"additionalFiles\":[{\"path\":\"a\",\"contents\":\"*\"}]}",
                      "additional_files[0].contents");
}

static void test_request_json_uint64_forms(void **state)
{
    (void)state;
    cleanup_json json_t *json = parse("{\"constraints\":{\"minMemory\":\"18446744073709551615\"}}");
    cleanup_build_request obi_build_request *req = NULL;
    assert_ok(obi_build_request_from_json(json, &req, err_ptr_));
    assert_true(req->constraints.min_memory == UINT64_MAX);
    assert_json_fails("{\"constraints\":{\"minMemory\":\"-1\"}}",
                      "constraints.min_memory: \"-1\" is not an unsigned decimal integer");
    assert_json_fails("{\"constraints\":{\"minMemory\":-1}}",
                      "constraints.min_memory: -1 is negative");
    assert_json_fails("{\"constraints\":{\"minMemory\":1.5}}",
                      "constraints.min_memory: expected an unsigned integer");
    obi_error *err = NULL;
    cleanup_json json_t *big = parse("{\"constraints\":{\"minMemory\":\"18446744073709551616\"}}");
    assert_fails_with(err, obi_build_request_from_json(big, &req, &err), -ERANGE,
                      "does not fit in 64 bits");
}

static void test_request_json_rejects_nul_in_strings(void **state)
{
    (void)state;
    cleanup_json json_t *json = json_object();
    json_object_set_new(json, "environmentVars",
                        json_pack("[{s:o}]", "key", json_stringn("A\0B", 3)));
    obi_build_request *req = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_request_from_json(json, &req, &err), -EINVAL,
                      "environment_vars[0].key: string contains NUL");
    assert_null(req);
}

static void test_build_json_round_trip(void **state)
{
    (void)state;
    cleanup_build obi_build *build = obi_build_new();
    build->request = fixture_request();
    build->n_outputs = 1;
    build->outputs = calloc(1, sizeof *build->outputs);
    fixture_node(&build->outputs[0], OBI_NODE_SYMLINK, "ccc-out", "target");
    build->outputs_needles = calloc(1, sizeof *build->outputs_needles);
    build->outputs_needles[0].needles = calloc(1, sizeof(uint64_t));
    build->outputs_needles[0].needles[0] = 1;
    build->outputs_needles[0].n_needles = 1;
    cleanup_json json_t *json = obi_build_to_json(build);
    assert_non_null(json);
    assert_string_equal(
        json_string_value(json_array_get(
            json_object_get(json_array_get(json_object_get(json, "outputsNeedles"), 0), "needles"),
            0)),
        "1");
    cleanup_build obi_build *back = NULL;
    assert_ok(obi_build_from_json(json, &back, err_ptr_));
    cleanup_json json_t *again = obi_build_to_json(back);
    assert_true(json_equal(json, again));
    obi_error *err = NULL;
    cleanup_json json_t *bad = parse("{\"buildRequest\":{\"commandArgs\":[1]}}");
    assert_fails_with(err, obi_build_from_json(bad, &back, &err), -EINVAL,
                      "build_request.command_args[0]: expected a string");
    cleanup_json json_t *bad2 = parse("{\"outputsNeedles\":[{\"needles\":[\"x\"]}],"
                                      "\"outputs\":[{\"symlink\":{\"name\":\"YQ==\","
                                      "\"target\":\"Yg==\"}}]}");
    assert_fails_with(err, obi_build_from_json(bad2, &back, &err), -EINVAL,
                      "outputs_needles[0].needles[0]");
}

static void test_build_snix_response_round_trips_with_anonymous_outputs(void **state)
{
    (void)state;
    cleanup_build obi_build *build = obi_build_new();
    build->request = fixture_request();
    build->n_outputs = 2;
    build->outputs = calloc(2, sizeof *build->outputs);
    fixture_node(&build->outputs[0], OBI_NODE_DIRECTORY, "ccc-out", NULL);
    fixture_node(&build->outputs[1], OBI_NODE_FILE, "ddd-doc", NULL);
    build->outputs_needles = calloc(2, sizeof *build->outputs_needles);
    build->outputs_needles[1].needles = calloc(1, sizeof(uint64_t));
    build->outputs_needles[1].needles[0] = 1;
    build->outputs_needles[1].n_needles = 1;
    cleanup_free uint8_t *data = NULL;
    size_t len;
    assert_ok(obi_build_encode_snix_pb(build, &data, &len, err_ptr_));
    /* BuildResponse.outputs is field 1 (where tvix's Build has its request) */
    assert_int_equal(data[0], 0x0a);
    cleanup_build obi_build *back = NULL;
    assert_ok(obi_build_decode_snix_pb(data, len, &back, err_ptr_));
    assert_null(back->request);
    assert_int_equal(back->n_outputs, 2);
    assert_int_equal(back->outputs[0].kind, OBI_NODE_DIRECTORY);
    assert_int_equal(back->outputs[0].name.len, 0);
    assert_true(obi_digest_equal(&back->outputs[1].digest, &build->outputs[1].digest));
    assert_int_equal(back->outputs_needles[0].n_needles, 0);
    assert_int_equal(back->outputs_needles[1].n_needles, 1);
    assert_int_equal(back->outputs_needles[1].needles[0], 1);
}

static void test_build_events_round_trip(void **state)
{
    (void)state;
    cleanup_free uint8_t *data = NULL;
    size_t len;
    assert_ok(obi_build_event_log_encode(OBI_BUILD_LOG_STDERR, (const uint8_t *)"line\n", 5, &data,
                                         &len, err_ptr_));
    cleanup_build_event obi_build_event *log = NULL;
    assert_ok(obi_build_event_decode(data, len, &log, err_ptr_));
    assert_int_equal(log->kind, OBI_BUILD_EVENT_LOG);
    assert_int_equal(log->stream, OBI_BUILD_LOG_STDERR);
    assert_int_equal(log->len, 5);
    assert_memory_equal(log->data, "line\n", 5);
    free(data);
    data = NULL;
    assert_ok(obi_build_event_failed_encode("exit code 3", 3, &data, &len, err_ptr_));
    cleanup_build_event obi_build_event *failed = NULL;
    assert_ok(obi_build_event_decode(data, len, &failed, err_ptr_));
    assert_int_equal(failed->kind, OBI_BUILD_EVENT_FAILED);
    assert_true(failed->has_exit_code);
    assert_int_equal(failed->exit_code, 3);
    assert_string_equal(failed->message, "exit code 3");
    free(data);
    data = NULL;
    assert_ok(obi_build_event_failed_encode("timed out", -1, &data, &len, err_ptr_));
    cleanup_build_event obi_build_event *no_exit = NULL;
    assert_ok(obi_build_event_decode(data, len, &no_exit, err_ptr_));
    assert_false(no_exit->has_exit_code);
    static const uint8_t empty[] = {0};
    obi_build_event *none = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_build_event_decode(empty, 0, &none, &err), -EINVAL, "no event set");
}

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_build_snix_response_round_trips_with_anonymous_outputs),
        cmocka_unit_test(test_build_events_round_trip),
        cmocka_unit_test(test_request_clean_path_rules),
        cmocka_unit_test(test_request_find_scratch_prefers_longest_match),
        cmocka_unit_test(test_request_rejects_env_value_with_nul),
        cmocka_unit_test(test_request_accepts_env_value_with_any_other_byte),
        cmocka_unit_test(test_request_accepts_missing_constraints),
        cmocka_unit_test(test_request_copy_is_deep_and_equal),
        cmocka_unit_test(test_request_pb_round_trip),
        cmocka_unit_test(test_request_pb_keeps_empty_constraints_present),
        cmocka_unit_test(test_request_pb_decodes_empty_message_to_defaults),
        cmocka_unit_test(test_request_pb_rejects_nul_in_env_key),
        cmocka_unit_test(test_request_pb_rejects_invalid_utf8),
        cmocka_unit_test(test_request_pb_rejects_truncated_input),
        cmocka_unit_test(test_request_pb_rejects_varint_overflowing_64_bits),
        cmocka_unit_test(test_request_pb_names_the_input_node_with_a_wrong_wire_type),
        cmocka_unit_test(test_request_pb_skips_unknown_fields),
        cmocka_unit_test(test_build_pb_round_trip),
        cmocka_unit_test(test_build_pb_rejects_needles_count_mismatch),
        cmocka_unit_test(test_build_pb_names_nested_request_fields),
        cmocka_unit_test(test_request_pb_checks_every_field_of_the_proto),
        cmocka_unit_test(test_request_pb_survives_mutations),
        cmocka_unit_test(test_request_json_round_trip),
        cmocka_unit_test(test_request_json_accepts_both_name_styles),
        cmocka_unit_test(test_request_json_null_means_default),
        cmocka_unit_test(test_request_json_rejects_unknown_fields),
        cmocka_unit_test(test_request_json_rejects_field_given_twice),
        cmocka_unit_test(test_request_json_rejects_wrong_types),
        cmocka_unit_test(test_request_json_rejects_bad_base64),
        cmocka_unit_test(test_request_json_uint64_forms),
        cmocka_unit_test(test_request_json_rejects_nul_in_strings),
        cmocka_unit_test(test_build_json_round_trip),
    };
    static struct CMUnitTest tests[OBI_ARRAY_SIZE(fixed) + OBI_ARRAY_SIZE(REQUEST_CASES)];
    memcpy(tests, fixed, sizeof fixed);
    for (size_t i = 0; i < OBI_ARRAY_SIZE(REQUEST_CASES); i++)
        tests[OBI_ARRAY_SIZE(fixed) + i] = (struct CMUnitTest){
            .name = REQUEST_CASES[i].name,
            .test_func = run_request_case,
            .initial_state = &REQUEST_CASES[i],
        };
    return cmocka_run_group_tests_name("request", tests, NULL, NULL);
}
