/*
 * A valid BuildRequest for unit tests (test_request.c, test_spec.c and the build tests), plus
 * setters that replace one field, so each test changes exactly the thing it is about:
 *   inputs        [directory "aaa-dep", symlink "bbb-link" -> "aaa-dep/bin"]
 *   command_args  ["/bin/sh", "-c", "echo hi > $out"]
 *   working_dir   "build", inputs_dir "nix/store"
 *   scratch_paths ["build", "nix/store"]
 *   outputs       ["nix/store/ccc-out", "nix/store/ddd-doc"]
 *   env           [HOME=/homeless-shelter, out=/nix/store/ccc-out]
 *   constraints   system "x86_64-linux"
 *   additional_files [build/.attrs.json = {}]
 *   refscan_needles ["aaa", "ccc"]
 */
#ifndef OCIBUILD_REQUEST_FIXTURE_H
#define OCIBUILD_REQUEST_FIXTURE_H

#include <stdlib.h>
#include <string.h>

#include "ocibuild/request.h"

static inline void fixture_set_strings(char ***field, size_t *n, const char *const *items)
{
    for (size_t i = 0; i < *n; i++)
        free((*field)[i]);
    free(*field);
    size_t count = 0;
    while (items[count])
        count++;
    *field = count ? calloc(count, sizeof **field) : NULL;
    for (size_t i = 0; i < count; i++)
        (*field)[i] = strdup(items[i]);
    *n = count;
}
#define FIXTURE_SET(req, field, ...)                                                               \
    do {                                                                                           \
        const char *const _items[] = {__VA_ARGS__, NULL};                                          \
        fixture_set_strings(&(req)->field, &(req)->n_##field, _items);                             \
    } while (0)
#define FIXTURE_SET_RO_PATHS(req, ...)                                                             \
    do {                                                                                           \
        const char *const _items[] = {__VA_ARGS__, NULL};                                          \
        fixture_set_strings(&(req)->constraints.available_ro_paths,                                \
                            &(req)->constraints.n_available_ro_paths, _items);                     \
    } while (0)
#define FIXTURE_CLEAR(req, field)                                                                  \
    do {                                                                                           \
        const char *const _items[] = {NULL};                                                       \
        fixture_set_strings(&(req)->field, &(req)->n_##field, _items);                             \
    } while (0)

static inline void fixture_set_string(char **field, const char *value)
{
    free(*field);
    *field = strdup(value);
}

/* Replaces the environment with n KEY, VALUE pairs (values may not contain NUL here). */
static inline void fixture_set_env(obi_build_request *req, size_t n, const char *const *kv)
{
    for (size_t i = 0; i < req->n_environment_vars; i++) {
        free(req->environment_vars[i].key);
        obi_bytes_clear(&req->environment_vars[i].value);
    }
    free(req->environment_vars);
    req->environment_vars = n ? calloc(n, sizeof *req->environment_vars) : NULL;
    for (size_t i = 0; i < n; i++) {
        req->environment_vars[i].key = strdup(kv[2 * i]);
        obi_bytes_set(&req->environment_vars[i].value, kv[2 * i + 1], strlen(kv[2 * i + 1]));
    }
    req->n_environment_vars = n;
}

/* Replaces the additional files with n PATH, CONTENTS pairs. */
static inline void fixture_set_files(obi_build_request *req, size_t n, const char *const *pc)
{
    for (size_t i = 0; i < req->n_additional_files; i++) {
        free(req->additional_files[i].path);
        obi_bytes_clear(&req->additional_files[i].contents);
    }
    free(req->additional_files);
    req->additional_files = n ? calloc(n, sizeof *req->additional_files) : NULL;
    for (size_t i = 0; i < n; i++) {
        req->additional_files[i].path = strdup(pc[2 * i]);
        obi_bytes_set(&req->additional_files[i].contents, pc[2 * i + 1], strlen(pc[2 * i + 1]));
    }
    req->n_additional_files = n;
}

static inline void fixture_node(obi_node *node, obi_node_kind kind, const char *name,
                                const char *target)
{
    memset(node, 0, sizeof *node);
    node->kind = kind;
    obi_bytes_set(&node->name, name, strlen(name));
    if (kind == OBI_NODE_SYMLINK) {
        obi_bytes_set(&node->target, target, strlen(target));
    } else {
        obi_digest_of(name, strlen(name), &node->digest);
        node->size = kind == OBI_NODE_DIRECTORY ? 3 : 5;
    }
}

/* Replaces the inputs with n nodes: directories, or symlinks to "x" when the name ends in
 * "-link", files when it ends in "-file". */
static inline void fixture_set_inputs(obi_build_request *req, size_t n, const char *const *names)
{
    for (size_t i = 0; i < req->n_inputs; i++)
        obi_node_clear(&req->inputs[i]);
    free(req->inputs);
    req->inputs = n ? calloc(n, sizeof *req->inputs) : NULL;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        obi_node_kind kind = len > 5 && !strcmp(names[i] + len - 5, "-link")   ? OBI_NODE_SYMLINK
                             : len > 5 && !strcmp(names[i] + len - 5, "-file") ? OBI_NODE_FILE
                                                                               : OBI_NODE_DIRECTORY;
        fixture_node(&req->inputs[i], kind, names[i], "aaa-dep/bin");
    }
    req->n_inputs = n;
}

static inline obi_build_request *fixture_request(void)
{
    obi_build_request *req = obi_build_request_new();
    const char *const inputs[] = {"aaa-dep", "bbb-link"};
    fixture_set_inputs(req, 2, inputs);
    FIXTURE_SET(req, command_args, "/bin/sh", "-c", "echo hi > $out");
    fixture_set_string(&req->working_dir, "build");
    FIXTURE_SET(req, scratch_paths, "build", "nix/store");
    fixture_set_string(&req->inputs_dir, "nix/store");
    FIXTURE_SET(req, outputs, "nix/store/ccc-out", "nix/store/ddd-doc");
    const char *const env[] = {"HOME", "/homeless-shelter", "out", "/nix/store/ccc-out"};
    fixture_set_env(req, 2, env);
    req->has_constraints = true;
    fixture_set_string(&req->constraints.system, "x86_64-linux");
    const char *const files[] = {"build/.attrs.json", "{}"};
    fixture_set_files(req, 1, files);
    FIXTURE_SET(req, refscan_needles, "aaa", "ccc");
    return req;
}

#endif
