/*
 * Unit tests for Nix 2.8's checks around a build (nix_checks.h): the refusals before it (system,
 * features, __noChroot, __impureHostDeps, builtin builders), the order of outputs and a cycle
 * between them, and the reference constraints after it (by store path and by output name,
 * direct and through the closure, with structured outputChecks and maxSize). The messages are
 * Nix's (tests/e2e/test_nix_fidelity.sh has Nix fail the same derivations with them).
 */
#include "test_helpers.h"

#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/nix_checks.h"

#define DRV "/nix/store/0000000000000000000000000000000a-t.drv"
#define OUT "/nix/store/1111111111111111111111111111111b-t"
#define DEV "/nix/store/2222222222222222222222222222222c-t-dev"
#define LIB "/nix/store/3333333333333333333333333333333d-lib"
#define LIBC "/nix/store/4444444444444444444444444444444f-libc"

static obi_derivation *parse(const char *system, const char *builder, const char *env)
{
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "Derive([(\"dev\",\"" DEV "\",\"\",\"\"),(\"out\",\"" OUT
                         "\",\"\",\"\")],[],[],\"%s\",\"%s\",[],[%s])",
                         system, builder, env) > 0);
    obi_derivation *drv = NULL;
    assert_ok(obi_derivation_parse(text, strlen(text), &drv, err_ptr_));
    return drv;
}

static char *platforms[] = {(char *)"i686-linux", NULL};
static char *features[] = {(char *)"big-parallel", (char *)"kvm", NULL};
static const obi_nix_machine MACHINE = {(char *)"x86_64-linux", platforms, features};

/* The error of obi_nix_check_can_build for a derivation (NULL: it may be built). */
static char *can_build(const char *system, const char *builder, const char *env, int *code)
{
    cleanup_derivation obi_derivation *drv = parse(system, builder, env);
    obi_derivation_attrs *attrs = NULL;
    assert_ok(obi_derivation_attrs_new(drv, DRV, &attrs, err_ptr_));
    obi_error *err = NULL;
    *code = obi_nix_check_can_build(&MACHINE, DRV, drv, attrs, &err);
    obi_derivation_attrs_free(attrs);
    char *message = err ? strdup(err->message) : NULL;
    obi_error_free(err);
    return message;
}

static void test_check_can_build_refuses_as_nix_does(void **state)
{
    (void)state;
    static const struct {
        const char *system, *builder, *env, *message;
        int code;
    } cases[] = {
        {"x86_64-linux", "/b", "", NULL, 0},
        {"i686-linux", "/b", "(\"requiredSystemFeatures\",\"kvm\")", NULL, 0},
        {"mips64-plan9", "/b", "",
         "a 'mips64-plan9' with features {} is required to build '" DRV
         "', but I am a 'x86_64-linux' with features {big-parallel, kvm}",
         -EINVAL},
        {"x86_64-linux", "/b", "(\"requiredSystemFeatures\",\"gpu kvm\")",
         "a 'x86_64-linux' with features {gpu, kvm} is required to build", -EINVAL},
        {"x86_64-linux", "/b", "(\"__noChroot\",\"1\")",
         "derivation '" DRV "' has '__noChroot' set, but that's not allowed when 'sandbox' is "
         "'true'",
         -EPERM},
        {"x86_64-linux", "/b", "(\"__impureHostDeps\",\"/usr/lib /bin\")",
         "derivation '" DRV "' requested impure path '/usr/lib', but it was not in "
         "allowed-impure-host-deps",
         -EPERM},
        {"x86_64-linux", "builtin:fetchurl", "", "builtin builder 'fetchurl' is not supported",
         -ENOTSUP},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int code = 0;
        cleanup_free char *message =
            can_build(cases[i].system, cases[i].builder, cases[i].env, &code);
        assert_int_equal(code, cases[i].code);
        if (!cases[i].message) {
            assert_null(message);
            continue;
        }
        assert_non_null(message);
        if (!strstr(message, cases[i].message))
            print_error("case %zu: '%s' lacks '%s'\n", i, message, cases[i].message);
        assert_non_null(strstr(message, cases[i].message));
    }
}

static void test_outputs_are_ordered_references_first(void **state)
{
    (void)state;
    char *out_refs[] = {(char *)DEV, (char *)LIB, NULL};
    obi_nix_output_facts outputs[] = {{"out", OUT, 10, out_refs, 2}, {"dev", DEV, 10, NULL, 0}};
    size_t order[2];
    assert_ok(obi_nix_order_outputs(DRV, outputs, 2, order, err_ptr_));
    assert_int_equal(order[0], 1); /* dev, which out refers to */
    assert_int_equal(order[1], 0);
}

static void test_cycle_between_outputs_names_both(void **state)
{
    (void)state;
    char *out_refs[] = {(char *)DEV, NULL};
    char *dev_refs[] = {(char *)OUT, NULL};
    obi_nix_output_facts outputs[] = {{"out", OUT, 10, out_refs, 1}, {"dev", DEV, 10, dev_refs, 1}};
    size_t order[2];
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_order_outputs(DRV, outputs, 2, order, &err), -EINVAL,
                      "cycle detected in build of '" DRV "' in the references of output 'dev' "
                      "from output 'out'");
}

/* lib refers to libc; libc to nothing. */
static int lookup(void *ctx, const char *path, char ***refs, size_t *n_refs, uint64_t *nar_size,
                  obi_error **err)
{
    (void)ctx;
    (void)err;
    *refs = calloc(2, sizeof **refs);
    assert_non_null(*refs);
    *n_refs = 0;
    if (strcmp(path, LIB) == 0)
        (*refs)[(*n_refs)++] = strdup(LIBC);
    *nar_size = 1000;
    return 0;
}

/* The error of checking out (refers to dev and lib) and dev under env's constraints. */
static char *check_refs(const char *env, int *code)
{
    cleanup_derivation obi_derivation *drv = parse("x86_64-linux", "/b", env);
    obi_derivation_attrs *attrs = NULL;
    assert_ok(obi_derivation_attrs_new(drv, DRV, &attrs, err_ptr_));
    char *out_refs[] = {(char *)DEV, (char *)LIB, NULL};
    obi_nix_output_facts outputs[] = {{"out", OUT, 100, out_refs, 2}, {"dev", DEV, 50, NULL, 0}};
    obi_error *err = NULL;
    *code = obi_nix_check_output_references(attrs, outputs, 2, lookup, NULL, &err);
    obi_derivation_attrs_free(attrs);
    char *message = err ? strdup(err->message) : NULL;
    obi_error_free(err);
    return message;
}

static void test_reference_constraints_as_nix(void **state)
{
    (void)state;
    static const struct {
        const char *env, *message;
    } cases[] = {
        {"(\"allowedReferences\",\"dev " LIB "\")", NULL},
        {"(\"allowedReferences\",\"dev\")",
         "output '" OUT "' is not allowed to refer to the following paths:\n  " LIB},
        {"(\"disallowedReferences\",\"" LIBC "\")", NULL},
        {"(\"disallowedRequisites\",\"" LIBC "\")",
         "output '" OUT "' is not allowed to refer to the following paths:\n  " LIBC},
        {"(\"allowedRequisites\",\"dev " LIB "\")",
         "output '" OUT "' is not allowed to refer to the following paths:\n  " LIBC},
        {"(\"allowedRequisites\",\"out dev " LIB " " LIBC "\")", NULL},
        {"(\"allowedReferences\",\"nonsense\")",
         "derivation contains an illegal reference specifier 'nonsense'"},
        {"(\"__json\",\"{\\\"outputChecks\\\":{\\\"out\\\":{\\\"disallowedReferences\\\":["
         "\\\"dev\\\"]}}}\")",
         "output '" OUT "' is not allowed to refer to the following paths:\n  " DEV},
        {"(\"__json\",\"{\\\"outputChecks\\\":{\\\"dev\\\":{\\\"maxSize\\\":49}}}\")",
         "path '" DEV "' is too large at 50 bytes; limit is 49 bytes"},
        {"(\"__json\",\"{\\\"outputChecks\\\":{\\\"out\\\":{\\\"maxClosureSize\\\":2000}}}\")",
         "closure of path '" OUT "' is too large at 2150 bytes; limit is 2000 bytes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int code = 0;
        cleanup_free char *message = check_refs(cases[i].env, &code);
        if (!cases[i].message) {
            if (message)
                print_error("case %zu: unexpected '%s'\n", i, message);
            assert_int_equal(code, 0);
            continue;
        }
        assert_int_equal(code, -EINVAL);
        assert_non_null(message);
        if (!strstr(message, cases[i].message))
            print_error("case %zu: '%s' lacks '%s'\n", i, message, cases[i].message);
        assert_non_null(strstr(message, cases[i].message));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_can_build_refuses_as_nix_does),
        cmocka_unit_test(test_outputs_are_ordered_references_first),
        cmocka_unit_test(test_cycle_between_outputs_names_both),
        cmocka_unit_test(test_reference_constraints_as_nix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
