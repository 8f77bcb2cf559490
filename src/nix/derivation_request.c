/*
 * Derivation -> BuildRequest (see include/ocibuild/derivation_request.h and nix.md). The
 * environment is assembled in Nix 2.x's three steps in a small key/value table (later steps
 * overwrite earlier ones) and sorted by key at the end; passAsFile values become additional
 * files under build/. Everything else is a direct mapping of the derivation's fields.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/array.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/derivation_request.h"
#include "ocibuild/digest.h"
#include "ocibuild/sha256.h"
#include "ocibuild/strv.h"

#define SANDBOX_BUILD_DIR "/build"

/* The needle of a store path basename: its 32-character hash part. */
static char *hash_part(const char *basename)
{
    return strndup(basename, OBI_NIX_HASH_PART_LEN);
}

char *obi_derivation_pass_as_file_name(const char *name)
{
    uint8_t digest[OBI_SHA256_LEN];
    obi_sha256_oneshot(name, strlen(name), digest);
    char encoded[64];
    obi_nixbase32_encode(digest, sizeof digest, encoded);
    char *out = NULL;
    if (asprintf(&out, ".attr-%s", encoded) < 0)
        return NULL;
    return out;
}

/* ---- the environment table ---- */

typedef struct env_table {
    obi_env_var *vars;
    size_t n;
    size_t cap;
} env_table;

static void env_table_clear(env_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->vars[i].key);
        obi_bytes_clear(&t->vars[i].value);
    }
    free(t->vars);
}

static int env_set(env_table *t, const char *key, const char *value)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->vars[i].key, key) == 0) {
            obi_bytes_clear(&t->vars[i].value);
            return obi_bytes_set(&t->vars[i].value, value, strlen(value));
        }
    if (obi_array_grow(&t->vars, &t->cap, t->n + 1) < 0)
        return -ENOMEM;
    obi_env_var *v = &t->vars[t->n];
    memset(v, 0, sizeof *v);
    v->key = strdup(key);
    if (!v->key)
        return -ENOMEM;
    if (obi_bytes_set(&v->value, value, strlen(value)) < 0) {
        free(v->key);
        return -ENOMEM;
    }
    t->n++;
    return 0;
}

static int compare_env(const void *a, const void *b)
{
    return strcmp(((const obi_env_var *)a)->key, ((const obi_env_var *)b)->key);
}

/* Whether name is one of passAsFile's whitespace-separated names. */
static bool in_pass_as_file(const char *pass_as_file, const char *name)
{
    static const char *const space = " \t\n\r";
    size_t len = strlen(name);
    for (const char *p = pass_as_file; p && *p;) {
        p += strspn(p, space);
        size_t n = strcspn(p, space);
        if (n == len && n > 0 && strncmp(p, name, n) == 0)
            return true;
        p += n;
    }
    return false;
}

static int add_file(obi_build_request *req, size_t *cap, const char *path, const char *contents)
{
    if (obi_array_grow(&req->additional_files, cap, req->n_additional_files + 1) < 0)
        return -ENOMEM;
    obi_additional_file *f = &req->additional_files[req->n_additional_files];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path)
        return -ENOMEM;
    if (obi_bytes_set(&f->contents, contents, strlen(contents)) < 0) {
        free(f->path);
        return -ENOMEM;
    }
    req->n_additional_files++;
    return 0;
}

static int compare_files(const void *a, const void *b)
{
    return strcmp(((const obi_additional_file *)a)->path, ((const obi_additional_file *)b)->path);
}

/* The three steps of nix.md; fills req->environment_vars and req->additional_files. */
static int build_environment(const obi_derivation *drv, const obi_derivation_request_options *opts,
                             obi_build_request *req)
{
    env_table env = {0};
    size_t files_cap = 0;
    char cores[24];
    snprintf(cores, sizeof cores, "%u", opts ? opts->build_cores : 1);
    int r = 0;

    /* 1. fixed defaults */
    const char *const defaults[][2] = {
        {"PATH", "/path-not-set"},
        {"HOME", "/homeless-shelter"},
        {"NIX_STORE", OBI_NIX_STORE_DIR},
        {"NIX_BUILD_CORES", cores},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(defaults) && r >= 0; i++)
        r = env_set(&env, defaults[i][0], defaults[i][1]);

    /* 2. the derivation's env, passAsFile names replaced by NPath and a file */
    const char *pass_as_file = obi_derivation_get_env(drv, "passAsFile");
    for (size_t i = 0; i < drv->n_env && r >= 0; i++) {
        const obi_derivation_env *e = &drv->env[i];
        if (!in_pass_as_file(pass_as_file, e->key)) {
            r = env_set(&env, e->key, e->value);
            continue;
        }
        cleanup_free char *file = obi_derivation_pass_as_file_name(e->key);
        cleanup_free char *key = NULL, *sandbox_path = NULL, *request_path = NULL;
        if (!file || asprintf(&key, "%sPath", e->key) < 0 ||
            asprintf(&sandbox_path, SANDBOX_BUILD_DIR "/%s", file) < 0 ||
            asprintf(&request_path, "build/%s", file) < 0) {
            r = -ENOMEM;
            break;
        }
        r = env_set(&env, key, sandbox_path);
        if (r >= 0)
            r = add_file(req, &files_cap, request_path, e->value);
    }

    /* 3. the sandbox's own variables */
    const char *const build_dir_vars[] = {"NIX_BUILD_TOP", "TMPDIR", "TEMPDIR",
                                          "TMP",           "TEMP",   "PWD"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(build_dir_vars) && r >= 0; i++)
        r = env_set(&env, build_dir_vars[i], SANDBOX_BUILD_DIR);
    if (r >= 0 && obi_derivation_is_fixed_output(drv))
        r = env_set(&env, "NIX_OUTPUT_CHECKED", "1");
    if (r >= 0)
        r = env_set(&env, "NIX_LOG_FD", "2");
    if (r >= 0)
        r = env_set(&env, "TERM", "xterm-256color");

    if (r < 0) {
        env_table_clear(&env);
        return r;
    }
    if (env.n > 1)
        qsort(env.vars, env.n, sizeof *env.vars, compare_env);
    if (req->n_additional_files > 1)
        qsort(req->additional_files, req->n_additional_files, sizeof *req->additional_files,
              compare_files);
    req->environment_vars = env.vars;
    req->n_environment_vars = env.n;
    return 0;
}

/* ---- inputs ---- */

static int compare_nodes_by_name(const void *a, const void *b)
{
    const obi_node *x = a, *y = b;
    size_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
    int c = memcmp(x->name.data, y->name.data, n);
    return c ? c : (x->name.len > y->name.len) - (x->name.len < y->name.len);
}

static bool nodes_equal(const obi_node *a, const obi_node *b)
{
    if (a->kind != b->kind || a->name.len != b->name.len ||
        memcmp(a->name.data, b->name.data, a->name.len) != 0)
        return false;
    switch (a->kind) {
    case OBI_NODE_SYMLINK:
        return a->target.len == b->target.len &&
               memcmp(a->target.data, b->target.data, a->target.len) == 0;
    case OBI_NODE_FILE:
        return obi_digest_equal(&a->digest, &b->digest) && a->size == b->size &&
               a->executable == b->executable;
    case OBI_NODE_DIRECTORY:
        return obi_digest_equal(&a->digest, &b->digest) && a->size == b->size;
    }
    return false;
}

/* Copies, sorts and de-duplicates the inputs into req; each name must be a store basename. */
static int set_inputs(obi_build_request *req, const obi_node *inputs, size_t n, obi_error **err)
{
    if (n == 0)
        return 0;
    req->inputs = calloc(n, sizeof *req->inputs);
    if (!req->inputs)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++) {
        if (obi_node_copy(&req->inputs[i], &inputs[i]) < 0)
            return obi_error_oom(err);
        req->n_inputs++;
    }
    qsort(req->inputs, n, sizeof *req->inputs, compare_nodes_by_name);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        obi_node *node = &req->inputs[i];
        if (kept > 0 && compare_nodes_by_name(&req->inputs[kept - 1], node) == 0) {
            if (!nodes_equal(&req->inputs[kept - 1], node))
                return obi_error_set(err, -EINVAL, "inputs: two different nodes named '%s'",
                                     (const char *)node->name.data);
            obi_node_clear(node);
            memset(node, 0, sizeof *node);
            continue;
        }
        cleanup_free char *path = NULL;
        const char *base;
        if (asprintf(&path, OBI_NIX_STORE_DIR "/%s", (const char *)node->name.data) < 0)
            return obi_error_oom(err);
        int r = obi_nix_store_path_parse(path, &base, err);
        if (r < 0)
            return obi_error_prefix(err, r, "inputs[%zu]", i);
        if (kept != i) {
            req->inputs[kept] = *node;
            memset(node, 0, sizeof *node);
        }
        kept++;
    }
    req->n_inputs = kept;
    return 0;
}

/* ---- the request ---- */

static int set_string(char **field, const char *value)
{
    char *copy = strdup(value);
    if (!copy)
        return -ENOMEM;
    free(*field);
    *field = copy;
    return 0;
}

static int set_outputs_and_needles(const obi_derivation *drv, obi_build_request *req,
                                   obi_error **err)
{
    size_t n_needles = drv->n_outputs + req->n_inputs;
    req->outputs = calloc(drv->n_outputs, sizeof *req->outputs);
    req->refscan_needles = calloc(n_needles, sizeof *req->refscan_needles);
    if (!req->outputs || !req->refscan_needles)
        return obi_error_oom(err);
    for (size_t i = 0; i < drv->n_outputs; i++) {
        const obi_derivation_output *o = &drv->outputs[i];
        if (!*o->path)
            return obi_error_set(err, -ENOTSUP,
                                 "output '%s' has no path (floating content-addressed "
                                 "derivations are not supported)",
                                 o->name);
        const char *base;
        int r = obi_nix_store_path_parse(o->path, &base, err);
        if (r < 0)
            return obi_error_prefix(err, r, "output '%s'", o->name);
        req->outputs[i] = strdup(o->path + 1);
        if (!req->outputs[i])
            return obi_error_oom(err);
        req->n_outputs++;
        req->refscan_needles[i] = hash_part(base);
        if (!req->refscan_needles[i])
            return obi_error_oom(err);
        req->n_refscan_needles++;
    }
    for (size_t i = 0; i < req->n_inputs; i++) {
        char *needle = hash_part((const char *)req->inputs[i].name.data);
        if (!needle)
            return obi_error_oom(err);
        req->refscan_needles[req->n_refscan_needles++] = needle;
    }
    if (req->n_outputs > 1)
        qsort(req->outputs, req->n_outputs, sizeof *req->outputs, obi_strv_item_compare);
    return 0;
}

static int set_command(const obi_derivation *drv, obi_build_request *req, obi_error **err)
{
    req->command_args = calloc(drv->n_args + 1, sizeof *req->command_args);
    if (!req->command_args)
        return obi_error_oom(err);
    for (size_t i = 0; i <= drv->n_args; i++) {
        req->command_args[i] = strdup(i == 0 ? drv->builder : drv->args[i - 1]);
        if (!req->command_args[i])
            return obi_error_oom(err);
        req->n_command_args++;
    }
    return 0;
}

static int set_layout(const obi_derivation *drv, obi_build_request *req, obi_error **err)
{
    static const char *const scratch[] = {"build", "nix/store"};
    req->scratch_paths = calloc(OBI_ARRAY_SIZE(scratch), sizeof *req->scratch_paths);
    if (!req->scratch_paths)
        return obi_error_oom(err);
    for (size_t i = 0; i < OBI_ARRAY_SIZE(scratch); i++) {
        req->scratch_paths[i] = strdup(scratch[i]);
        if (!req->scratch_paths[i])
            return obi_error_oom(err);
        req->n_scratch_paths++;
    }
    req->has_constraints = true;
    req->constraints.provide_bin_sh = true;
    req->constraints.network_access = obi_derivation_is_fixed_output(drv);
    if (set_string(&req->working_dir, "build") < 0 ||
        set_string(&req->inputs_dir, &OBI_NIX_STORE_DIR[1]) < 0 ||
        set_string(&req->constraints.system, drv->system) < 0)
        return obi_error_oom(err);
    return 0;
}

int obi_derivation_to_build_request(const obi_derivation *drv, const obi_node *inputs,
                                    size_t n_inputs, const obi_derivation_request_options *opts,
                                    obi_build_request **out, obi_error **err)
{
    /* Structured attributes change the environment and add .attrs.json/.attrs.sh; building
     * without them would silently differ from Nix. */
    if (obi_derivation_get_env(drv, "__json"))
        return obi_error_set(err, -ENOTSUP,
                             "derivation to build request: structured attributes (__json) are "
                             "not supported");
    cleanup_build_request obi_build_request *req = obi_build_request_new();
    if (!req)
        return obi_error_oom(err);
    int r = set_command(drv, req, err);
    if (r >= 0)
        r = set_layout(drv, req, err);
    if (r >= 0)
        r = set_inputs(req, inputs, n_inputs, err);
    if (r >= 0)
        r = set_outputs_and_needles(drv, req, err);
    if (r >= 0 && build_environment(drv, opts, req) < 0)
        r = obi_error_oom(err);
    if (r < 0)
        return obi_error_prefix(err, r, "derivation to build request");
    *out = steal_pointer(&req);
    return 0;
}
