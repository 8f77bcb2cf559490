/*
 * Unit tests for the .drv (ATerm) parser and serializer: real derivations written by Nix 2.8
 * (nix-instantiate), including a fixed-output one and one with two outputs; every kind of parse
 * error with its byte offset; string escapes; exact round trips.
 */
#include "test_helpers.h"

#include <stdlib.h>
#include <string.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/derivation.h"
#include "ocibuild/json_util.h"

/* builtins.derivation with passAsFile, an input derivation's "dev" output and escapes. */
static const char HELLO_DRV[] =
    "Derive([(\"out\",\"/nix/store/1jbvb3lkv6405j33s6n3wk7nzfndf2a5-hello\",\"\",\"\")],"
    "[(\"/nix/store/qdpacafvf73w9pmzyjz5c218zf9p8y91-dep.drv\",[\"dev\"])],"
    "[\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\"],\"x86_64-linux\","
    "\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\","
    "[\"-c\",\"echo \\\"$text\\\" > $out; echo "
    "/nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev >> $out\"],"
    "[(\"builder\",\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\"),(\"name\",\"hello\"),"
    "(\"out\",\"/nix/store/1jbvb3lkv6405j33s6n3wk7nzfndf2a5-hello\"),(\"passAsFile\",\"text\"),"
    "(\"system\",\"x86_64-linux\"),(\"text\",\"a \\\"quoted\\\"\\n\\ttab\\\\ back\\r\")])";

/* Two outputs, dev before out (Nix sorts outputs by name). */
static const char DEP_DRV[] =
    "Derive([(\"dev\",\"/nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev\",\"\",\"\"),"
    "(\"out\",\"/nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep\",\"\",\"\")],[],"
    "[\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\"],\"x86_64-linux\","
    "\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\",[\"-c\",\"echo hi > $out; echo d > "
    "$dev\"],[(\"builder\",\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\"),(\"dev\","
    "\"/nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev\"),(\"name\",\"dep\"),(\"out\","
    "\"/nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep\"),(\"outputs\",\"out dev\"),(\"system\","
    "\"x86_64-linux\")])";

/* Fixed-output (flat sha256 of "hello"). */
static const char FOD_DRV[] =
    "Derive([(\"out\",\"/nix/store/9q0mqp4y1k819ysjzsfjah1ld74x19w2-fod\",\"sha256\","
    "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\")],[],"
    "[\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\"],\"x86_64-linux\","
    "\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\",[\"-c\",\"echo -n hello > $out\"],"
    "[(\"builder\",\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\"),(\"name\",\"fod\"),"
    "(\"out\",\"/nix/store/9q0mqp4y1k819ysjzsfjah1ld74x19w2-fod\"),(\"outputHash\","
    "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"),(\"outputHashAlgo\","
    "\"sha256\"),(\"outputHashMode\",\"flat\"),(\"system\",\"x86_64-linux\")])";

static obi_derivation *parse_ok(const char *text)
{
    obi_derivation *drv = NULL;
    assert_ok(obi_derivation_parse(text, strlen(text), &drv, err_ptr_));
    assert_non_null(drv);
    return drv;
}

static void assert_round_trip(const char *text)
{
    cleanup_derivation obi_derivation *drv = parse_ok(text);
    cleanup_free char *back = NULL;
    size_t len = 0;
    assert_ok(obi_derivation_serialize(drv, &back, &len, err_ptr_));
    assert_int_equal(len, strlen(text));
    assert_string_equal(back, text);
}

/* Parses text, expects failure, and checks the whole message. */
static void assert_parse_error(const char *text, const char *message)
{
    obi_derivation *drv = NULL;
    obi_error *err = NULL;
    int r = obi_derivation_parse(text, strlen(text), &drv, &err);
    assert_int_equal(r, -EINVAL);
    assert_null(drv);
    assert_non_null(err);
    if (strcmp(err->message, message) != 0)
        print_error("got '%s'\nwant '%s'\n", err->message, message);
    assert_string_equal(err->message, message);
    obi_error_free(err);
}

static void test_derivation_parses_nix_written_derivation(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = parse_ok(HELLO_DRV);
    assert_int_equal(drv->n_outputs, 1);
    assert_string_equal(drv->outputs[0].name, "out");
    assert_string_equal(drv->outputs[0].path, "/nix/store/1jbvb3lkv6405j33s6n3wk7nzfndf2a5-hello");
    assert_string_equal(drv->outputs[0].hash_algo, "");
    assert_string_equal(drv->outputs[0].hash, "");
    assert_int_equal(drv->n_input_drvs, 1);
    assert_string_equal(drv->input_drvs[0].drv_path,
                        "/nix/store/qdpacafvf73w9pmzyjz5c218zf9p8y91-dep.drv");
    assert_int_equal(drv->input_drvs[0].n_outputs, 1);
    assert_string_equal(drv->input_drvs[0].outputs[0], "dev");
    assert_int_equal(drv->n_input_srcs, 1);
    assert_string_equal(drv->input_srcs[0], "/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash");
    assert_string_equal(drv->system, "x86_64-linux");
    assert_string_equal(drv->builder, "/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash");
    assert_int_equal(drv->n_args, 2);
    assert_string_equal(drv->args[0], "-c");
    assert_string_equal(drv->args[1],
                        "echo \"$text\" > $out; echo "
                        "/nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev >> $out");
    assert_int_equal(drv->n_env, 6);
    assert_string_equal(drv->env[3].key, "passAsFile");
    assert_string_equal(obi_derivation_get_env(drv, "name"), "hello");
    assert_null(obi_derivation_get_env(drv, "nope"));
    assert_false(obi_derivation_is_fixed_output(drv));
}

static void test_derivation_decodes_all_escapes(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = parse_ok(HELLO_DRV);
    assert_string_equal(obi_derivation_get_env(drv, "text"), "a \"quoted\"\n\ttab\\ back\r");
}

static void test_derivation_parses_multiple_outputs(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = parse_ok(DEP_DRV);
    assert_int_equal(drv->n_outputs, 2);
    assert_string_equal(drv->outputs[0].name, "dev");
    assert_string_equal(drv->outputs[1].name, "out");
    assert_string_equal(obi_derivation_find_output(drv, "out")->path,
                        "/nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep");
    assert_null(obi_derivation_find_output(drv, "lib"));
    assert_int_equal(drv->n_input_drvs, 0);
    assert_false(obi_derivation_is_fixed_output(drv));
}

static void test_derivation_parses_fixed_output(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = parse_ok(FOD_DRV);
    assert_true(obi_derivation_is_fixed_output(drv));
    assert_string_equal(drv->outputs[0].hash_algo, "sha256");
    assert_string_equal(drv->outputs[0].hash,
                        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
}

static void test_derivation_accepts_recursive_and_other_hash_algos(void **state)
{
    (void)state;
    const char *r_sha256 = "Derive([(\"out\",\"/nix/store/x-fod\",\"r:sha256\",\""
                           "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\")],"
                           "[],[],\"x86_64-linux\",\"/b\",[],[])";
    const char *sha1 = "Derive([(\"out\",\"/nix/store/x-fod\",\"sha1\","
                       "\"aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d\")],[],[],\"s\",\"/b\",[],[])";
    const char *r_md5 = "Derive([(\"out\",\"/nix/store/x-fod\",\"r:md5\","
                        "\"5d41402abc4b2a76b9719d911017c592\")],[],[],\"s\",\"/b\",[],[])";
    const char *texts[] = {r_sha256, sha1, r_md5};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(texts); i++) {
        cleanup_derivation obi_derivation *drv = parse_ok(texts[i]);
        assert_true(obi_derivation_is_fixed_output(drv));
        bool recursive = false;
        const char *algo = NULL;
        size_t len = 0;
        assert_ok(obi_derivation_hash_algo_parse(drv->outputs[0].hash_algo, &recursive, &algo, &len,
                                                 err_ptr_));
        assert_int_equal(recursive, i != 1);
        assert_int_equal(len, i == 0 ? 32 : i == 1 ? 20 : 16);
        assert_round_trip(texts[i]);
    }
}

static void test_derivation_round_trips_exactly(void **state)
{
    (void)state;
    assert_round_trip(HELLO_DRV);
    assert_round_trip(DEP_DRV);
    assert_round_trip(FOD_DRV);
    assert_round_trip("Derive([(\"out\",\"/nix/store/"
                      "1jbvb3lkv6405j33s6n3wk7nzfndf2a5-x\",\"\",\"\")],[],[],\"\",\"\",[],[])");
}

static void test_derivation_serializer_escapes_strings(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv =
        parse_ok("Derive([(\"out\",\"\",\"\",\"\")],[],[],\"s\",\"/b\",[],[(\"k\",\"v\")])");
    free(drv->env[0].value);
    drv->env[0].value = strdup("q\"b\\n\nr\rt\t");
    cleanup_free char *text = NULL;
    assert_ok(obi_derivation_serialize(drv, &text, NULL, err_ptr_));
    assert_non_null(strstr(text, "(\"k\",\"q\\\"b\\\\n\\nr\\rt\\t\")"));
}

static void test_derivation_reports_unexpected_byte_with_offset(void **state)
{
    (void)state;
    assert_parse_error("Derivx(", "drv: offset 5: expected 'e' got 'x'");
    assert_parse_error("", "drv: offset 0: expected 'D' got end of input");
    /* missing ',' between output fields: offset of the '"' that follows "out" */
    assert_parse_error("Derive([(\"out\"\"\",\"\",\"\")],[],[],\"s\",\"/b\",[],[])",
                       "drv: offset 14: expected ',' got '\"'");
    assert_parse_error("Derive([(\"out\",\"\",\"\",\"\")];[],[],\"s\",\"/b\",[],[])",
                       "drv: offset 25: expected ',' got ';'");
    assert_parse_error("Derive([(\"out\",\"\",\"\",\"\");",
                       "drv: offset 24: expected ',' or ']' got ';'");
    assert_parse_error("Derive([(\"out\",\"\",\"\",\"\")],[],[],s,\"/b\",[],[])",
                       "drv: offset 32: expected '\"' got 's'");
    assert_parse_error("Derive([(\"out\",\"\",\"\",\"\")],[],[],\"s\",\"/b\",[],[] )",
                       "drv: offset 46: expected ')' got ' '");
    assert_parse_error("Derive([(\"out\",\"\",\"\",\"\")],[],[],\"s\",\"/b\",[],[]",
                       "drv: offset 46: expected ')' got end of input");
    assert_parse_error("Derive([(\"out\",\"\",\"\",\"\")],[],[],\"s\",\"/b\",[],[]\x01)",
                       "drv: offset 46: expected ')' got '\\x01'");
}

static void test_derivation_rejects_trailing_data(void **state)
{
    (void)state;
    assert_parse_error("Derive([(\"out\",\"\",\"\",\"\")],[],[],\"s\",\"/b\",[],[])\n",
                       "drv: offset 47: trailing data after the derivation");
}

static void test_derivation_rejects_bad_escape_with_offset(void **state)
{
    (void)state;
    assert_parse_error("Derive([(\"out\",\"\",\"\",\"\")],[],[],\"s\\x\",\"/b\",[],[])",
                       "drv: offset 35: invalid escape: expected one of \" \\ n r t got 'x'");
}

static void test_derivation_rejects_unterminated_string(void **state)
{
    (void)state;
    assert_parse_error("Derive([(\"out\",\"/o",
                       "drv: offset 18: unterminated string starting at offset 15");
    assert_parse_error("Derive([(\"out\",\"/o\\",
                       "drv: offset 19: unterminated string starting at offset 15");
}

static void test_derivation_rejects_nul_byte(void **state)
{
    (void)state;
    const char text[] = "Derive([(\"out\",\"/\0o\",\"\",\"\")],[],[],\"s\",\"/b\",[],[])";
    obi_derivation *drv = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_derivation_parse(text, sizeof text - 1, &drv, &err), -EINVAL,
                      "drv: offset 17: NUL byte in string");
    assert_null(drv);
}

static void test_derivation_rejects_semantic_errors_with_offset(void **state)
{
    (void)state;
    assert_parse_error("Derive([],[],[],\"s\",\"/b\",[],[])",
                       "drv: offset 7: a derivation needs at least one output");
    assert_parse_error("Derive([(\"\",\"\",\"\",\"\")],[],[],\"s\",\"/b\",[],[])",
                       "drv: offset 9: empty output name");
    assert_parse_error(
        "Derive([(\"out\",\"\",\"\",\"\"),(\"out\",\"\",\"\",\"\")],[],[],\"s\",\"/b\",[],[])",
        "drv: offset 26: duplicate output 'out'");
    assert_parse_error("Derive([(\"out\",\"\",\"blake7\",\"\")],[],[],\"s\",\"/b\",[],[])",
                       "drv: offset 18: output 'out': unknown hash algorithm 'blake7' (expected "
                       "[r:]md5, sha1, sha256 or sha512)");
    assert_parse_error("Derive([(\"out\",\"\",\"\",\"abcd\")],[],[],\"s\",\"/b\",[],[])",
                       "drv: offset 21: output 'out': hash without a hash algorithm");
    assert_parse_error("Derive([(\"out\",\"\",\"r:md5\",\"abcd\")],[],[],\"s\",\"/b\",[],[])",
                       "drv: offset 26: output 'out': hash must be 32 lowercase hex digits for "
                       "r:md5");
    assert_parse_error("Derive([(\"out\",\"\",\"md5\",\"5D41402ABC4B2A76B9719D911017C592\")],[],"
                       "[],\"s\",\"/b\",[],[])",
                       "drv: offset 24: output 'out': hash must be 32 lowercase hex digits for "
                       "md5");
    assert_parse_error(
        "Derive([(\"out\",\"\",\"\",\"\")],[],[],\"s\",\"/b\",[],[(\"a\",\"1\"),(\"a\",\"2\")])",
        "drv: offset 56: duplicate environment variable 'a'");
}

static void test_derivation_floating_ca_output_is_not_fixed_output(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv =
        parse_ok("Derive([(\"out\",\"\",\"r:sha256\",\"\")],[],[],\"s\",\"/b\",[],[])");
    assert_false(obi_derivation_is_fixed_output(drv));
}

static void test_derivation_read_file_prefixes_path(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *path = NULL;
    assert_true(asprintf(&path, "%s/x.drv", dir) > 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(FOD_DRV, f);
    fclose(f);
    obi_derivation *drv = NULL;
    assert_ok(obi_derivation_read_file(path, &drv, err_ptr_));
    assert_true(obi_derivation_is_fixed_output(drv));
    obi_derivation_free(drv);
    drv = NULL;

    f = fopen(path, "w");
    fputs("Derive(x", f);
    fclose(f);
    obi_error *err = NULL;
    assert_int_equal(obi_derivation_read_file(path, &drv, &err), -EINVAL);
    assert_non_null(strstr(err->message, path));
    assert_non_null(strstr(err->message, "drv: offset 7: expected '[' got 'x'"));
    obi_error_free(err);
    obi_test_tmpdir_remove(dir);
}

/* Nix computes a fixed output's path from its hash and the derivation's name (the file name),
 * and show-derivation prints that one, whatever the file says. */
static void test_derivation_fixed_output_path_is_computed(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = parse_ok(FOD_DRV);
    drv->name = strdup("fod");
    cleanup_free char *path = NULL;
    assert_ok(obi_derivation_output_path(drv, &drv->outputs[0], &path, err_ptr_));
    assert_string_equal(path, "/nix/store/9q0mqp4y1k819ysjzsfjah1ld74x19w2-fod");
    free(drv->outputs[0].path);
    drv->outputs[0].path = strdup("/nix/store/00000000000000000000000000000000-wrong");
    char *names[] = {"fod.drv"};
    const obi_derivation *drvs[] = {drv};
    cleanup_buf obi_buf out = OBI_BUF_INIT;
    assert_ok(obi_derivations_show_json(names, drvs, 1, &out, err_ptr_));
    assert_non_null(strstr((const char *)out.data,
                           "\"path\": \"/nix/store/9q0mqp4y1k819ysjzsfjah1ld74x19w2-fod\""));
    assert_null(strstr((const char *)out.data, "-wrong"));
}

/* Floating content-addressed and deferred outputs have no path: the key is left out. */
static void test_derivation_json_leaves_out_unknown_paths(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv =
        parse_ok("Derive([(\"out\",\"\",\"r:sha256\",\"\")],[],[],\"s\",\"/b\",[],[])");
    char *names[] = {"x.drv"};
    const obi_derivation *drvs[] = {drv};
    cleanup_buf obi_buf out = OBI_BUF_INIT;
    assert_ok(obi_derivations_show_json(names, drvs, 1, &out, err_ptr_));
    assert_null(strstr((const char *)out.data, "\"path\""));
    assert_non_null(strstr((const char *)out.data, "\"hashAlgo\": \"r:sha256\""));
    obi_derivation_kind kind;
    assert_ok(obi_derivation_kind_of(drv, &kind, err_ptr_));
    assert_int_equal(kind, OBI_DRV_FLOATING);
}

/* Nix's parser takes input derivations and sources only as store paths: the hash-modulo form
 * (a bare hex hash in place of the .drv path) is refused, naming the offset. */
static void test_derivation_rejects_non_store_path_dependencies(void **state)
{
    (void)state;
    assert_parse_error("Derive([(\"out\",\"\",\"\",\"\")],[(\"42cfa58bf5a281911b6c9471c67cf64f"
                       "70a820b033415190db3da91710c5ff2c\",[\"out\"])],[],\"s\",\"/b\",[],[])",
                       "drv: offset 28: input derivation: '42cfa58bf5a281911b6c9471c67cf64f70a820b"
                       "033415190db3da91710c5ff2c' is not in /nix/store");
    assert_parse_error("Derive([(\"out\",\"\",\"\",\"\")],[],[\"/tmp/src\"],\"s\",\"/b\",[],[])",
                       "drv: offset 30: input source: '/tmp/src' is not in /nix/store");
    assert_parse_error("Derive([(\"out\",\"/o\",\"\",\"\")],[],[],\"s\",\"/b\",[],[])",
                       "drv: offset 15: output 'out': '/o' is not in /nix/store");
}

/* Output kinds may not be mixed, as in Nix. */
static void test_derivation_kind_refuses_mixed_outputs(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv =
        parse_ok("Derive([(\"a\",\"\",\"r:sha256\",\"\"),(\"out\",\"\",\"\",\"\")],[],[],"
                 "\"s\",\"/b\",[],[])");
    obi_derivation_kind kind;
    obi_error *err = NULL;
    assert_fails_with(err, obi_derivation_kind_of(drv, &kind, &err), -EINVAL,
                      "can't mix derivation output types");
    cleanup_derivation obi_derivation *ia = parse_ok(HELLO_DRV);
    assert_ok(obi_derivation_kind_of(ia, &kind, err_ptr_));
    assert_int_equal(kind, OBI_DRV_INPUT_ADDRESSED);
}

static void test_derivation_shows_json_as_nix_escaping_bytes_only(void **state)
{
    (void)state;
    /* a value with a control byte, a byte that is not UTF-8 and the ATerm escapes */
    static const char DRV[] = "Derive([(\"out\",\"/nix/store/1jbvb3lkv6405j33s6n3wk7nzfndf2a5-x\","
                              "\"\",\"\")],[],[],\"sys\",\"/b\",[],[(\"k\",\"a\x01\xff\\\"\\r\")])";
    cleanup_derivation obi_derivation *drv = NULL;
    assert_ok(obi_derivation_parse(DRV, sizeof DRV - 1, &drv, err_ptr_));
    char *names[] = {"x.drv"};
    const obi_derivation *drvs[] = {drv};
    cleanup_buf obi_buf out = OBI_BUF_INIT;
    assert_ok(obi_derivations_show_json(names, drvs, 1, &out, err_ptr_));
    assert_string_equal((const char *)out.data,
                        "{\n"
                        "  \"x.drv\": {\n"
                        "    \"outputs\": {\n"
                        "      \"out\": {\n"
                        "        \"path\": \"/nix/store/1jbvb3lkv6405j33s6n3wk7nzfndf2a5-x\"\n"
                        "      }\n"
                        "    },\n"
                        "    \"inputSrcs\": [],\n"
                        "    \"inputDrvs\": {},\n"
                        "    \"system\": \"sys\",\n"
                        "    \"builder\": \"/b\",\n"
                        "    \"args\": [],\n"
                        "    \"env\": {\n"
                        "      \"k\": \"a\\u0001\xff\\\"\\r\"\n"
                        "    }\n"
                        "  }\n"
                        "}\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_derivation_shows_json_as_nix_escaping_bytes_only),
        cmocka_unit_test(test_derivation_parses_nix_written_derivation),
        cmocka_unit_test(test_derivation_decodes_all_escapes),
        cmocka_unit_test(test_derivation_parses_multiple_outputs),
        cmocka_unit_test(test_derivation_parses_fixed_output),
        cmocka_unit_test(test_derivation_accepts_recursive_and_other_hash_algos),
        cmocka_unit_test(test_derivation_round_trips_exactly),
        cmocka_unit_test(test_derivation_serializer_escapes_strings),
        cmocka_unit_test(test_derivation_reports_unexpected_byte_with_offset),
        cmocka_unit_test(test_derivation_rejects_trailing_data),
        cmocka_unit_test(test_derivation_rejects_bad_escape_with_offset),
        cmocka_unit_test(test_derivation_rejects_unterminated_string),
        cmocka_unit_test(test_derivation_rejects_nul_byte),
        cmocka_unit_test(test_derivation_rejects_semantic_errors_with_offset),
        cmocka_unit_test(test_derivation_floating_ca_output_is_not_fixed_output),
        cmocka_unit_test(test_derivation_read_file_prefixes_path),
        cmocka_unit_test(test_derivation_fixed_output_path_is_computed),
        cmocka_unit_test(test_derivation_json_leaves_out_unknown_paths),
        cmocka_unit_test(test_derivation_rejects_non_store_path_dependencies),
        cmocka_unit_test(test_derivation_kind_refuses_mixed_outputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
