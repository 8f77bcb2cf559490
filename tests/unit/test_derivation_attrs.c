/*
 * Unit tests for a derivation's attributes as Nix 2.8 reads them (derivation_attrs.h): from the
 * env (lists split on whitespace, "1" true) or from __json; the type errors with Nix's words;
 * exportReferencesGraph's checks; and the two files of structured attributes, compared with what
 * Nix 2.8's sandbox gave a builder for the same attributes (.attrs.json and .attrs.sh copied to
 * the output by tests/e2e/test_nix_fidelity.sh's "structured" derivation).
 */
#include "test_helpers.h"

#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/derivation_attrs.h"
#include "ocibuild/json_util.h"

#define OUT "/nix/store/ak2k2xza15ps51l2w53lbjw1l261g0xa-obi-f-structured"
#define MID "/nix/store/xr48m8lwdcm4s2fy9kp6phi3pflyc3zd-obi-f-mid"

static obi_derivation *parse_with_env(const char *env)
{
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "Derive([(\"out\",\"" OUT "\",\"\",\"\")],[],[],\"x86_64-linux\","
                         "\"/b\",[],[%s])",
                         env) > 0);
    obi_derivation *drv = NULL;
    assert_ok(obi_derivation_parse(text, strlen(text), &drv, err_ptr_));
    return drv;
}

static obi_derivation_attrs *attrs_of(const obi_derivation *drv)
{
    obi_derivation_attrs *attrs = NULL;
    assert_ok(obi_derivation_attrs_new(drv, "/nix/store/x-t.drv", &attrs, err_ptr_));
    return attrs;
}

static void test_attrs_from_env_split_words_and_read_one_as_true(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = parse_with_env(
        "(\"__noChroot\",\"1\"),(\"allowSubstitutes\",\"\"),(\"requiredSystemFeatures\","
        "\" kvm\\tbig-parallel\\n\")");
    cleanup_derivation_attrs obi_derivation_attrs *attrs = attrs_of(drv);
    assert_null(obi_derivation_attrs_structured(attrs));
    bool b = false;
    assert_ok(obi_derivation_attrs_get_bool(attrs, "__noChroot", false, &b, err_ptr_));
    assert_true(b);
    assert_ok(obi_derivation_attrs_get_bool(attrs, "allowSubstitutes", true, &b, err_ptr_));
    assert_false(b);
    assert_ok(obi_derivation_attrs_get_bool(attrs, "unset", true, &b, err_ptr_));
    assert_true(b);
    cleanup_strv char **features = NULL;
    size_t n = 0;
    assert_ok(obi_derivation_attrs_required_features(attrs, &features, &n, err_ptr_));
    assert_int_equal(n, 2);
    assert_string_equal(features[0], "big-parallel");
    assert_string_equal(features[1], "kvm");
}

static void test_structured_attrs_are_typed(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = parse_with_env(
        "(\"__json\",\"{\\\"__noChroot\\\":\\\"yes\\\",\\\"allowedReferences\\\":[\\\"a\\\",1],"
        "\\\"preferLocalBuild\\\":true}\")");
    cleanup_derivation_attrs obi_derivation_attrs *attrs = attrs_of(drv);
    assert_non_null(obi_derivation_attrs_structured(attrs));
    bool b = false;
    assert_ok(obi_derivation_attrs_get_bool(attrs, "preferLocalBuild", false, &b, err_ptr_));
    assert_true(b);
    obi_error *err = NULL;
    assert_fails_with(err, obi_derivation_attrs_get_bool(attrs, "__noChroot", false, &b, &err),
                      -EINVAL, "attribute '__noChroot' of derivation");
    char **list = NULL;
    size_t n = 0;
    assert_fails_with(err,
                      obi_derivation_attrs_get_strings(attrs, "allowedReferences", &list, &n, &err),
                      -EINVAL, "allowedReferences");
    assert_null(list);
}

static void test_bad_json_names_the_derivation(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = parse_with_env("(\"__json\",\"{oops\")");
    obi_derivation_attrs *attrs = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_derivation_attrs_new(drv, "/nix/store/x-t.drv", &attrs, &err),
                      -EINVAL, "cannot process __json attribute of '/nix/store/x-t.drv'");
    assert_null(attrs);
}

static void test_export_graph_env_form_is_checked(void **state)
{
    (void)state;
    static const struct {
        const char *env, *message;
    } bad[] = {
        {"(\"exportReferencesGraph\",\"closure\")", "odd number of tokens"},
        {"(\"exportReferencesGraph\",\"../x " MID "\")", "invalid file name '../x'"},
        {"(\"exportReferencesGraph\",\"c /etc/passwd\")",
         "contains a non-store path '/etc/passwd'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cleanup_derivation obi_derivation *drv = parse_with_env(bad[i].env);
        cleanup_derivation_attrs obi_derivation_attrs *attrs = attrs_of(drv);
        obi_export_graph_spec *specs = NULL;
        size_t n = 0;
        obi_error *err = NULL;
        assert_fails_with(err, obi_derivation_attrs_export_graphs(attrs, &specs, &n, &err), -EINVAL,
                          bad[i].message);
    }
    /* a path below a store path stands for the store path */
    cleanup_derivation obi_derivation *drv =
        parse_with_env("(\"exportReferencesGraph\",\"closure " MID "/bin/x\")");
    cleanup_derivation_attrs obi_derivation_attrs *attrs = attrs_of(drv);
    obi_export_graph_spec *specs = NULL;
    size_t n = 0;
    assert_ok(obi_derivation_attrs_export_graphs(attrs, &specs, &n, err_ptr_));
    assert_int_equal(n, 1);
    assert_string_equal(specs[0].name, "closure");
    assert_int_equal(specs[0].n_paths, 1);
    assert_string_equal(specs[0].paths[0], MID);
    obi_export_graph_specs_free(specs, n);
}

/* The attributes of test_nix_fidelity.sh's "structured" derivation, completed with outputs. */
static const char STRUCTURED[] =
    "{\"builder\":\"/nix/store/wjy2msil2glkjpnpjwipz62bw87fy4ni-bash-static\",\"dep\":\"" MID
    "\",\"f\":false,\"flt\":1.5,\"list\":[\"a\",1,true],\"n\":null,\"name\":\"obi-f-structured\","
    "\"nonce\":\"1796284231018992255-5533\",\"num\":42,\"obj\":{\"k\":\"v\"},\"outputs\":{\"out\":"
    "\"" OUT "\"},\"str\":\"a 'q' \\\"s\\\"\",\"system\":\"x86_64-linux\",\"t\":true}";

static void test_attrs_files_match_nix(void **state)
{
    (void)state;
    json_error_t jerr;
    /* parsed in another key order, so the dump has to sort */
    cleanup_json json_t *json = json_loads(STRUCTURED, 0, &jerr);
    assert_non_null(json);
    cleanup_free char *dumped = obi_nix_json_dump(json);
    assert_string_equal(dumped, STRUCTURED);
    cleanup_free char *sh = obi_nix_attrs_shell(json);
    assert_string_equal(sh, "declare builder='/nix/store/wjy2msil2glkjpnpjwipz62bw87fy4ni-"
                            "bash-static'\n"
                            "declare dep='" MID "'\n"
                            "declare f=\n"
                            "declare -a list=('a' 1 1 )\n"
                            "declare n=''\n"
                            "declare name='obi-f-structured'\n"
                            "declare nonce='1796284231018992255-5533'\n"
                            "declare num=42\n"
                            "declare -A obj=(['k']='v' )\n"
                            "declare -A outputs=(['out']='" OUT "' )\n"
                            "declare str='a '\\''q'\\'' \"s\"'\n"
                            "declare system='x86_64-linux'\n"
                            "declare t=1\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attrs_from_env_split_words_and_read_one_as_true),
        cmocka_unit_test(test_structured_attrs_are_typed),
        cmocka_unit_test(test_bad_json_names_the_derivation),
        cmocka_unit_test(test_export_graph_env_form_is_checked),
        cmocka_unit_test(test_attrs_files_match_nix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
