/*
 * Unit tests for derivation -> BuildRequest: the fixed layout, the environment recipe (checked
 * against what Nix 2.8's sandbox showed for the same derivation with `export -p`), passAsFile
 * files named like Nix names them, constraints for normal and fixed-output derivations, inputs
 * sorted and de-duplicated, and the needle order (outputs, then inputs).
 */
#include "test_helpers.h"

#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/derivation_request.h"

/* nix-instantiate of builtins.derivation { name = "pf"; ...; text = "x"; other = "y";
 * passAsFile = ["text" "other"]; } */
static const char PF_DRV[] =
    "Derive([(\"out\",\"/nix/store/vaf1hazi08dqf253k9wp3qr1xwdpapz9-pf\",\"\",\"\")],[],"
    "[\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\"],\"x86_64-linux\","
    "\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\",[\"-c\",\"echo $textPath $otherPath > "
    "$out; export -p >> $out\"],[(\"builder\",\"/nix/store/"
    "gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\"),(\"name\",\"pf\"),(\"other\",\"y\"),(\"out\","
    "\"/nix/store/vaf1hazi08dqf253k9wp3qr1xwdpapz9-pf\"),(\"passAsFile\",\"text other\"),"
    "(\"system\",\"x86_64-linux\"),(\"text\",\"x\")])";

static const char FOD_DRV[] =
    "Derive([(\"out\",\"/nix/store/9q0mqp4y1k819ysjzsfjah1ld74x19w2-fod\",\"sha256\","
    "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\")],[],"
    "[\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\"],\"x86_64-linux\","
    "\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\",[\"-c\",\"echo -n hello > $out\"],"
    "[(\"builder\",\"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash\"),(\"name\",\"fod\"),"
    "(\"out\",\"/nix/store/9q0mqp4y1k819ysjzsfjah1ld74x19w2-fod\"),(\"outputHash\","
    "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"),(\"outputHashAlgo\","
    "\"sha256\"),(\"outputHashMode\",\"flat\"),(\"system\",\"x86_64-linux\")])";

/* Two outputs, dev listed before out. */
static const char DEP_DRV[] =
    "Derive([(\"dev\",\"/nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev\",\"\",\"\"),"
    "(\"out\",\"/nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep\",\"\",\"\")],[],[],"
    "\"x86_64-linux\",\"/b\",[],[(\"dev\",\"/nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev\")"
    ",(\"out\",\"/nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep\")])";

#define BASH "gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash"
#define LIB "0a1ssdzzwb0c0hw63bkyfcml0qqn0c2x-lib"

static obi_derivation *parse(const char *text)
{
    obi_derivation *drv = NULL;
    assert_ok(obi_derivation_parse(text, strlen(text), &drv, err_ptr_));
    return drv;
}

static obi_build_request *to_request(const char *text, const obi_node *inputs, size_t n_inputs)
{
    cleanup_derivation obi_derivation *drv = parse(text);
    obi_derivation_request_options opts = {.build_cores = 2};
    obi_build_request *req = NULL;
    assert_ok(obi_derivation_to_build_request(drv, inputs, n_inputs, &opts, &req, err_ptr_));
    return req;
}

static void file_node(obi_node *node, const char *name, uint8_t fill)
{
    obi_digest d;
    memset(d.bytes, fill, sizeof d.bytes);
    assert_int_equal(obi_node_init_file(node, name, strlen(name), &d, 5, true), 0);
}

static void test_derivation_request_sets_command_and_layout(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = to_request(PF_DRV, NULL, 0);
    assert_int_equal(req->n_command_args, 3);
    assert_string_equal(req->command_args[0], "/nix/store/" BASH);
    assert_string_equal(req->command_args[1], "-c");
    assert_string_equal(req->command_args[2],
                        "echo $textPath $otherPath > $out; export -p >> $out");
    assert_string_equal(req->working_dir, "build");
    assert_int_equal(req->n_scratch_paths, 2);
    assert_string_equal(req->scratch_paths[0], "build");
    assert_string_equal(req->scratch_paths[1], "nix/store");
    assert_string_equal(req->inputs_dir, "nix/store");
    assert_int_equal(req->n_outputs, 1);
    assert_string_equal(req->outputs[0], "nix/store/vaf1hazi08dqf253k9wp3qr1xwdpapz9-pf");
    assert_true(req->has_constraints);
    assert_string_equal(req->constraints.system, "x86_64-linux");
    assert_true(req->constraints.provide_bin_sh);
    assert_false(req->constraints.network_access);
}

/* The sandbox environment Nix 2.8 showed (export -p) for PF_DRV, minus bash's own SHLVL/OLDPWD. */
static void test_derivation_request_environment_matches_nix_sandbox(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = to_request(PF_DRV, NULL, 0);
    static const char *const want[][2] = {
        {"HOME", "/homeless-shelter"},
        {"NIX_BUILD_CORES", "2"},
        {"NIX_BUILD_TOP", "/build"},
        {"NIX_LOG_FD", "2"},
        {"NIX_STORE", "/nix/store"},
        {"PATH", "/path-not-set"},
        {"PWD", "/build"},
        {"TEMP", "/build"},
        {"TEMPDIR", "/build"},
        {"TERM", "xterm-256color"},
        {"TMP", "/build"},
        {"TMPDIR", "/build"},
        {"builder", "/nix/store/" BASH},
        {"name", "pf"},
        {"otherPath", "/build/.attr-1yng5xdkybsglm9mszm44zpkq3qvcjn5vn2bvhvmhwxhs488lafr"},
        {"out", "/nix/store/vaf1hazi08dqf253k9wp3qr1xwdpapz9-pf"},
        {"passAsFile", "text other"},
        {"system", "x86_64-linux"},
        {"textPath", "/build/.attr-1lf969yddshzhld7sr1vbagr07bnygg99lgl6gk5kxcnp4z9wbcq"},
    };
    assert_int_equal(req->n_environment_vars, OBI_ARRAY_SIZE(want));
    for (size_t i = 0; i < OBI_ARRAY_SIZE(want); i++) {
        assert_string_equal(req->environment_vars[i].key, want[i][0]);
        assert_string_equal((const char *)req->environment_vars[i].value.data, want[i][1]);
    }
}

static void test_derivation_request_writes_pass_as_file_values_to_additional_files(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = to_request(PF_DRV, NULL, 0);
    assert_int_equal(req->n_additional_files, 2);
    /* sorted by path */
    assert_string_equal(req->additional_files[0].path,
                        "build/.attr-1lf969yddshzhld7sr1vbagr07bnygg99lgl6gk5kxcnp4z9wbcq");
    assert_string_equal((const char *)req->additional_files[0].contents.data, "x");
    assert_string_equal(req->additional_files[1].path,
                        "build/.attr-1yng5xdkybsglm9mszm44zpkq3qvcjn5vn2bvhvmhwxhs488lafr");
    assert_string_equal((const char *)req->additional_files[1].contents.data, "y");
}

static void test_derivation_request_names_attr_files_like_nix(void **state)
{
    (void)state;
    cleanup_free char *text = obi_derivation_pass_as_file_name("text");
    cleanup_free char *other = obi_derivation_pass_as_file_name("other");
    assert_string_equal(text, ".attr-1lf969yddshzhld7sr1vbagr07bnygg99lgl6gk5kxcnp4z9wbcq");
    assert_string_equal(other, ".attr-1yng5xdkybsglm9mszm44zpkq3qvcjn5vn2bvhvmhwxhs488lafr");
}

static void test_derivation_request_fixed_output_gets_network_and_checked_flag(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = to_request(FOD_DRV, NULL, 0);
    assert_true(req->constraints.network_access);
    bool found = false;
    for (size_t i = 0; i < req->n_environment_vars; i++)
        if (!strcmp(req->environment_vars[i].key, "NIX_OUTPUT_CHECKED")) {
            assert_string_equal((const char *)req->environment_vars[i].value.data, "1");
            found = true;
        }
    assert_true(found);
    assert_int_equal(req->n_additional_files, 0);

    cleanup_build_request obi_build_request *normal = to_request(PF_DRV, NULL, 0);
    for (size_t i = 0; i < normal->n_environment_vars; i++)
        assert_string_not_equal(normal->environment_vars[i].key, "NIX_OUTPUT_CHECKED");
}

static void test_derivation_request_environment_is_sorted_and_overrides(void **state)
{
    (void)state;
    /* the derivation's PATH overrides step 1; its TMPDIR is overridden by step 3 */
    cleanup_build_request obi_build_request *req =
        to_request("Derive([(\"out\",\"/nix/store/vaf1hazi08dqf253k9wp3qr1xwdpapz9-pf\",\"\",\"\")]"
                   ",[],[],\"s\",\"/b\",[],[(\"PATH\",\"/mine\"),(\"TMPDIR\",\"/tmp\"),"
                   "(\"Zed\",\"z\")])",
                   NULL, 0);
    for (size_t i = 1; i < req->n_environment_vars; i++)
        assert_true(strcmp(req->environment_vars[i - 1].key, req->environment_vars[i].key) < 0);
    for (size_t i = 0; i < req->n_environment_vars; i++) {
        const char *key = req->environment_vars[i].key;
        const char *value = (const char *)req->environment_vars[i].value.data;
        if (!strcmp(key, "PATH"))
            assert_string_equal(value, "/mine");
        if (!strcmp(key, "TMPDIR"))
            assert_string_equal(value, "/build");
    }
}

static void test_derivation_request_needles_are_outputs_then_inputs(void **state)
{
    (void)state;
    obi_node inputs[3];
    file_node(&inputs[0], BASH, 1);
    file_node(&inputs[1], LIB, 2);
    file_node(&inputs[2], BASH, 1); /* exact duplicate from an overlapping closure */
    cleanup_build_request obi_build_request *req = to_request(DEP_DRV, inputs, 3);
    for (size_t i = 0; i < 3; i++)
        obi_node_clear(&inputs[i]);

    assert_int_equal(req->n_inputs, 2);
    assert_string_equal((const char *)req->inputs[0].name.data, LIB);
    assert_string_equal((const char *)req->inputs[1].name.data, BASH);
    /* outputs sorted by path; needles in the derivation's output order, then inputs */
    assert_int_equal(req->n_outputs, 2);
    assert_string_equal(req->outputs[0], "nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev");
    assert_string_equal(req->outputs[1], "nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep");
    static const char *const want[] = {
        "miggdwz67ak98cf5cwvahjy6vcxk793b",
        "qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff",
        "0a1ssdzzwb0c0hw63bkyfcml0qqn0c2x",
        "gsmjp5dzhqrpk3ffx5p6d567nx3xzsag",
    };
    assert_int_equal(req->n_refscan_needles, OBI_ARRAY_SIZE(want));
    for (size_t i = 0; i < OBI_ARRAY_SIZE(want); i++)
        assert_string_equal(req->refscan_needles[i], want[i]);
}

static void test_derivation_request_rejects_conflicting_inputs(void **state)
{
    (void)state;
    obi_node inputs[2];
    file_node(&inputs[0], BASH, 1);
    file_node(&inputs[1], BASH, 2);
    cleanup_derivation obi_derivation *drv = parse(PF_DRV);
    obi_build_request *req = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_derivation_to_build_request(drv, inputs, 2, NULL, &req, &err),
                      -EINVAL, "two different nodes named '" BASH "'");
    assert_null(req);
    obi_node_clear(&inputs[0]);
    obi_node_clear(&inputs[1]);
}

static void test_derivation_request_rejects_input_not_named_like_a_store_path(void **state)
{
    (void)state;
    obi_node input;
    file_node(&input, "bash", 1);
    cleanup_derivation obi_derivation *drv = parse(PF_DRV);
    obi_build_request *req = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_derivation_to_build_request(drv, &input, 1, NULL, &req, &err),
                      -EINVAL, "inputs[0]: '/nix/store/bash' is not a store path");
    obi_node_clear(&input);
}

static void test_derivation_request_floating_outputs_go_where_the_caller_says(void **state)
{
    (void)state;
    obi_build_request *req = NULL;
    obi_error *err = NULL;
    cleanup_derivation obi_derivation *floating =
        parse("Derive([(\"out\",\"\",\"r:sha256\",\"\")],[],[],\"s\",\"/b\",[],[])");
    assert_fails_with(err, obi_derivation_to_build_request(floating, NULL, 0, NULL, &req, &err),
                      -ENOTSUP, "output 'out' has no path");
    /* a floating output built where the caller says: there */
    char *paths[] = {"/nix/store/vaf1hazi08dqf253k9wp3qr1xwdpapz9-pf"};
    obi_derivation_request_options opts = {.output_paths = paths};
    assert_ok(obi_derivation_to_build_request(floating, NULL, 0, &opts, &req, err_ptr_));
    assert_string_equal(req->outputs[0], "nix/store/vaf1hazi08dqf253k9wp3qr1xwdpapz9-pf");
    obi_build_request_free(req);
    req = NULL;
    char *foreign[] = {"/gnu/store/x"};
    opts.output_paths = foreign;
    assert_fails_with(err, obi_derivation_to_build_request(floating, NULL, 0, &opts, &req, &err),
                      -EINVAL, "output 'out': '/gnu/store/x' is not in /nix/store");
    assert_null(req);
}

static void test_derivation_request_passes_build_request_validation(void **state)
{
    (void)state;
    obi_node inputs[2];
    file_node(&inputs[0], BASH, 1);
    file_node(&inputs[1], LIB, 2);
    const char *texts[] = {PF_DRV, FOD_DRV, DEP_DRV};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(texts); i++) {
        cleanup_build_request obi_build_request *req = to_request(texts[i], inputs, 2);
        assert_ok(obi_build_request_validate(req, err_ptr_));
    }
    obi_node_clear(&inputs[0]);
    obi_node_clear(&inputs[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_derivation_request_sets_command_and_layout),
        cmocka_unit_test(test_derivation_request_passes_build_request_validation),
        cmocka_unit_test(test_derivation_request_environment_matches_nix_sandbox),
        cmocka_unit_test(test_derivation_request_writes_pass_as_file_values_to_additional_files),
        cmocka_unit_test(test_derivation_request_names_attr_files_like_nix),
        cmocka_unit_test(test_derivation_request_fixed_output_gets_network_and_checked_flag),
        cmocka_unit_test(test_derivation_request_environment_is_sorted_and_overrides),
        cmocka_unit_test(test_derivation_request_needles_are_outputs_then_inputs),
        cmocka_unit_test(test_derivation_request_rejects_conflicting_inputs),
        cmocka_unit_test(test_derivation_request_rejects_input_not_named_like_a_store_path),
        cmocka_unit_test(test_derivation_request_floating_outputs_go_where_the_caller_says),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
