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
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/derivation_request.h"
#include "ocibuild/digest.h"
#include "ocibuild/json_util.h"
#include "ocibuild/nar.h"
#include "ocibuild/nix_store_path.h"
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

/* ---- what the build sees: placeholders, files ---- */

/* The state of one conversion: the derivation, its attributes, where its outputs go and the
 * placeholder rewrites that follow from that. */
typedef struct conversion {
    const obi_derivation *drv;
    const obi_derivation_attrs *attrs;
    const obi_derivation_request_options *opts;
    char **output_paths;       /* per output of drv, in its order */
    obi_nix_rewrite *rewrites; /* placeholder -> output path, sorted by placeholder */
    size_t n_rewrites;
    size_t files_cap;
} conversion;

static void conversion_clear(conversion *c)
{
    for (size_t i = 0; c->output_paths && i < c->drv->n_outputs; i++)
        free(c->output_paths[i]);
    free(c->output_paths);
    for (size_t i = 0; i < c->n_rewrites; i++)
        free((char *)c->rewrites[i].from);
    free(c->rewrites);
}

static int compare_rewrites(const void *a, const void *b)
{
    return strcmp(((const obi_nix_rewrite *)a)->from, ((const obi_nix_rewrite *)b)->from);
}

/* The output paths (given, or known from the derivation) and their placeholders. */
static int set_output_paths(conversion *c, obi_error **err)
{
    const obi_derivation *drv = c->drv;
    c->output_paths = calloc(drv->n_outputs, sizeof *c->output_paths);
    c->rewrites = calloc(drv->n_outputs, sizeof *c->rewrites);
    if (!c->output_paths || !c->rewrites)
        return obi_error_oom(err);
    for (size_t i = 0; i < drv->n_outputs; i++) {
        const obi_derivation_output *o = &drv->outputs[i];
        if (c->opts && c->opts->output_paths) {
            if (!(c->output_paths[i] = strdup(c->opts->output_paths[i])))
                return obi_error_oom(err);
        } else {
            int r = obi_derivation_output_path(drv, o, &c->output_paths[i], err);
            if (r < 0)
                return r;
            if (!c->output_paths[i])
                return obi_error_set(err, -ENOTSUP,
                                     "output '%s' has no path yet (content-addressed: the caller "
                                     "must choose where it is built)",
                                     o->name);
        }
        const char *base;
        int r = obi_nix_store_path_parse(c->output_paths[i], &base, err);
        if (r < 0)
            return obi_error_prefix(err, r, "output '%s'", o->name);
        char *placeholder = obi_nix_hash_placeholder(o->name);
        if (!placeholder)
            return obi_error_oom(err);
        c->rewrites[c->n_rewrites++] = (obi_nix_rewrite){placeholder, c->output_paths[i]};
    }
    if (c->n_rewrites > 1)
        qsort(c->rewrites, c->n_rewrites, sizeof *c->rewrites, compare_rewrites);
    return 0;
}

static char *rewrite(const conversion *c, const char *s)
{
    return obi_nix_rewrite_string(s, c->rewrites, c->n_rewrites);
}

/* Sets key=value in env, both with placeholders replaced (Nix rewrites "key=value"). */
static int env_set_rewritten(const conversion *c, env_table *env, const char *key,
                             const char *value)
{
    cleanup_free char *k = rewrite(c, key), *v = rewrite(c, value);
    return k && v ? env_set(env, k, v) : -ENOMEM;
}

static int add_build_file(conversion *c, obi_build_request *req, const char *name,
                          const char *contents)
{
    cleanup_free char *path = NULL;
    if (asprintf(&path, "build/%s", name) < 0)
        return -ENOMEM;
    return add_file(req, &c->files_cap, path, contents);
}

/* The validity registration Nix writes for exportReferencesGraph (no deriver, no hash):
 * per path "<path>\n\n<n>\n<ref>\n..." */
static char *validity_registration(const obi_nix_export_graph *graph)
{
    cleanup_buf obi_buf text = OBI_BUF_INIT;
    if (obi_buf_reserve(&text, 0) < 0)
        return NULL;
    for (size_t i = 0; i < graph->n_infos; i++) {
        const obi_nix_path_info *info = graph->infos[i];
        if (obi_buf_appendf(&text, "%s\n\n%zu\n", info->path, info->n_references) < 0)
            return NULL;
        for (size_t k = 0; k < info->n_references; k++)
            if (obi_buf_appendf(&text, "%s\n", info->references[k]) < 0)
                return NULL;
    }
    return obi_buf_steal(&text);
}

/* The index of path within graph (binary search: sorted by path), or SIZE_MAX. */
static size_t graph_find(const obi_nix_export_graph *graph, const char *path)
{
    size_t lo = 0, hi = graph->n_infos;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(graph->infos[mid]->path, path);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

/* Nix's closureSize: the NAR sizes of the closure of infos[index] within graph (which is
 * closed under references). */
static uint64_t closure_size(const obi_nix_export_graph *graph, size_t index)
{
    cleanup_free bool *seen = calloc(graph->n_infos, sizeof *seen);
    cleanup_free size_t *stack = calloc(graph->n_infos + 1, sizeof *stack);
    if (!seen || !stack)
        return 0;
    uint64_t total = 0;
    size_t top = 0;
    stack[top++] = index;
    seen[index] = true;
    while (top > 0) {
        const obi_nix_path_info *info = graph->infos[stack[--top]];
        total += info->nar.size;
        for (size_t k = 0; k < info->n_references; k++) {
            size_t j = graph_find(graph, info->references[k]);
            if (j != SIZE_MAX && !seen[j]) {
                seen[j] = true;
                stack[top++] = j;
            }
        }
    }
    return total;
}

/* The structured form of a graph: Nix's pathInfoToJSON without impure fields, with
 * closureSize. */
static json_t *graph_to_json(const obi_nix_export_graph *graph)
{
    cleanup_json json_t *list = json_array();
    for (size_t i = 0; list && i < graph->n_infos; i++) {
        const obi_nix_path_info *info = graph->infos[i];
        cleanup_free char *nar_hash = obi_nar_hash_to_string(&info->nar);
        json_t *refs = json_array();
        for (size_t k = 0; refs && k < info->n_references; k++)
            if (json_array_append_new(refs, json_string(info->references[k])) < 0) {
                json_decref(refs);
                refs = NULL;
            }
        json_t *entry = json_pack("{s:s, s:s?, s:I, s:o?, s:I}", "path", info->path, "narHash",
                                  nar_hash, "narSize", (json_int_t)info->nar.size, "references",
                                  refs, "closureSize", (json_int_t)closure_size(graph, i));
        if (!nar_hash || !entry ||
            (info->ca && json_object_set_new(entry, "ca", json_string(info->ca)) < 0) ||
            json_array_append_new(list, entry) < 0)
            return NULL;
    }
    return steal_pointer(&list);
}

/* exportReferencesGraph without structured attributes: one file per graph in /build. */
static int add_graph_files(conversion *c, obi_build_request *req)
{
    for (size_t i = 0; c->opts && i < c->opts->n_export_graphs; i++) {
        cleanup_free char *text = validity_registration(&c->opts->export_graphs[i]);
        if (!text || add_build_file(c, req, c->opts->export_graphs[i].name, text) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* Structured attributes: .attrs.json (the attributes, "outputs" with the output paths, the
 * export graphs) and .attrs.sh, with placeholders replaced, and the variables naming them. */
static int add_structured_files(conversion *c, env_table *env, obi_build_request *req)
{
    cleanup_json json_t *json = json_deep_copy(obi_derivation_attrs_structured(c->attrs));
    json_t *outputs = json_object();
    if (!json || json_object_set_new(json, "outputs", outputs) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < c->drv->n_outputs; i++)
        if (json_object_set_new(outputs, c->drv->outputs[i].name, json_string(c->output_paths[i])) <
            0)
            return -ENOMEM;
    for (size_t i = 0; c->opts && i < c->opts->n_export_graphs; i++) {
        json_t *graph = graph_to_json(&c->opts->export_graphs[i]);
        if (!graph || json_object_set_new(json, c->opts->export_graphs[i].name, graph) < 0)
            return -ENOMEM;
    }
    cleanup_free char *shell = obi_nix_attrs_shell(json);
    cleanup_free char *dumped = obi_nix_json_dump(json);
    cleanup_free char *shell_text = shell ? rewrite(c, shell) : NULL;
    cleanup_free char *json_text = dumped ? rewrite(c, dumped) : NULL;
    if (!shell_text || !json_text || add_build_file(c, req, ".attrs.sh", shell_text) < 0 ||
        add_build_file(c, req, ".attrs.json", json_text) < 0 ||
        env_set(env, "NIX_ATTRS_SH_FILE", SANDBOX_BUILD_DIR "/.attrs.sh") < 0 ||
        env_set(env, "NIX_ATTRS_JSON_FILE", SANDBOX_BUILD_DIR "/.attrs.json") < 0)
        return -ENOMEM;
    return 0;
}

/* Step 2 without structured attributes: the derivation's env, passAsFile names replaced by
 * NPath and a file. */
static int add_derivation_env(conversion *c, env_table *env, obi_build_request *req)
{
    const obi_derivation *drv = c->drv;
    const char *pass_as_file = obi_derivation_get_env(drv, "passAsFile");
    for (size_t i = 0; i < drv->n_env; i++) {
        const obi_derivation_env *e = &drv->env[i];
        if (!in_pass_as_file(pass_as_file, e->key)) {
            if (env_set_rewritten(c, env, e->key, e->value) < 0)
                return -ENOMEM;
            continue;
        }
        cleanup_free char *file = obi_derivation_pass_as_file_name(e->key);
        cleanup_free char *key = NULL, *sandbox_path = NULL;
        cleanup_free char *contents = rewrite(c, e->value);
        if (!file || !contents || asprintf(&key, "%sPath", e->key) < 0 ||
            asprintf(&sandbox_path, SANDBOX_BUILD_DIR "/%s", file) < 0 ||
            env_set_rewritten(c, env, key, sandbox_path) < 0 ||
            add_build_file(c, req, file, contents) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* impureEnvVars of a fixed-output derivation: this process's values ("" when unset). */
static int add_impure_env(conversion *c, env_table *env, obi_error **err)
{
    cleanup_strv char **names = NULL;
    size_t n = 0;
    int r = obi_derivation_attrs_get_strings(c->attrs, "impureEnvVars", &names, &n, err);
    for (size_t i = 0; r >= 0 && i < n; i++) {
        const char *value = getenv(names[i]);
        if (env_set_rewritten(c, env, names[i], value ? value : "") < 0)
            r = obi_error_oom(err);
    }
    return r < 0 ? r : 0;
}

/* The steps of Nix 2.8's initEnv (later steps overwrite earlier ones); fills
 * req->environment_vars and req->additional_files. */
static int build_environment(conversion *c, obi_build_request *req, obi_error **err)
{
    _cleanup_(env_table_clear) env_table env = {0};
    char cores[24];
    snprintf(cores, sizeof cores, "%u", c->opts ? c->opts->build_cores : 1);
    bool structured = obi_derivation_attrs_structured(c->attrs) != NULL;
    bool fixed = obi_derivation_is_fixed_output(c->drv);

    /* 1. fixed defaults */
    const char *const defaults[][2] = {
        {"PATH", "/path-not-set"},
        {"HOME", "/homeless-shelter"},
        {"NIX_STORE", OBI_NIX_STORE_DIR},
        {"NIX_BUILD_CORES", cores},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(defaults); i++)
        if (env_set_rewritten(c, &env, defaults[i][0], defaults[i][1]) < 0)
            return obi_error_oom(err);

    /* 2. the derivation's env (not with structured attributes: those are files) */
    if (!structured && add_derivation_env(c, &env, req) < 0)
        return obi_error_oom(err);

    /* 3. the sandbox's own variables */
    const char *const build_dir_vars[] = {"NIX_BUILD_TOP", "TMPDIR", "TEMPDIR",
                                          "TMP",           "TEMP",   "PWD"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(build_dir_vars); i++)
        if (env_set_rewritten(c, &env, build_dir_vars[i], SANDBOX_BUILD_DIR) < 0)
            return obi_error_oom(err);
    if (fixed && env_set(&env, "NIX_OUTPUT_CHECKED", "1") < 0)
        return obi_error_oom(err);
    if (fixed) {
        int r = add_impure_env(c, &env, err);
        if (r < 0)
            return r;
    }
    if (env_set(&env, "NIX_LOG_FD", "2") < 0 || env_set(&env, "TERM", "xterm-256color") < 0)
        return obi_error_oom(err);

    /* 4. structured attributes and exportReferencesGraph */
    if ((structured ? add_structured_files(c, &env, req) : add_graph_files(c, req)) < 0)
        return obi_error_oom(err);

    if (env.n > 1)
        qsort(env.vars, env.n, sizeof *env.vars, compare_env);
    if (req->n_additional_files > 1)
        qsort(req->additional_files, req->n_additional_files, sizeof *req->additional_files,
              compare_files);
    req->environment_vars = steal_pointer(&env.vars);
    req->n_environment_vars = env.n;
    env.n = 0;
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

static int set_outputs_and_needles(const conversion *c, obi_build_request *req, obi_error **err)
{
    const obi_derivation *drv = c->drv;
    size_t n_needles = drv->n_outputs + req->n_inputs;
    req->outputs = calloc(drv->n_outputs, sizeof *req->outputs);
    req->refscan_needles = calloc(n_needles, sizeof *req->refscan_needles);
    if (!req->outputs || !req->refscan_needles)
        return obi_error_oom(err);
    for (size_t i = 0; i < drv->n_outputs; i++) {
        const char *path = c->output_paths[i];
        req->outputs[i] = strdup(path + 1);
        if (!req->outputs[i])
            return obi_error_oom(err);
        req->n_outputs++;
        req->refscan_needles[i] = hash_part(path + strlen(OBI_NIX_STORE_DIR "/"));
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

/* argv: the builder, then the args with placeholders replaced (Nix leaves the builder as is). */
static int set_command(const conversion *c, obi_build_request *req, obi_error **err)
{
    const obi_derivation *drv = c->drv;
    req->command_args = calloc(drv->n_args + 1, sizeof *req->command_args);
    if (!req->command_args)
        return obi_error_oom(err);
    for (size_t i = 0; i <= drv->n_args; i++) {
        req->command_args[i] = i == 0 ? strdup(drv->builder) : rewrite(c, drv->args[i - 1]);
        if (!req->command_args[i])
            return obi_error_oom(err);
        req->n_command_args++;
    }
    return 0;
}

static int set_layout(const conversion *c, obi_build_request *req, obi_error **err)
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
    req->constraints.network_access = obi_derivation_is_fixed_output(c->drv);
    req->constraints.hide_sys = true;
    if (c->opts && c->opts->kvm) {
        req->constraints.available_ro_paths = calloc(2, sizeof(char *));
        if (!req->constraints.available_ro_paths ||
            !(req->constraints.available_ro_paths[0] = strdup("/dev/kvm")))
            return obi_error_oom(err);
        req->constraints.n_available_ro_paths = 1;
    }
    if (set_string(&req->working_dir, "build") < 0 ||
        set_string(&req->inputs_dir, &OBI_NIX_STORE_DIR[1]) < 0 ||
        set_string(&req->constraints.system, c->drv->system) < 0)
        return obi_error_oom(err);
    return 0;
}

int obi_derivation_to_build_request(const obi_derivation *drv, const obi_node *inputs,
                                    size_t n_inputs, const obi_derivation_request_options *opts,
                                    obi_build_request **out, obi_error **err)
{
    cleanup_derivation_attrs obi_derivation_attrs *own_attrs = NULL;
    _cleanup_(conversion_clear)
        conversion c = {drv, opts ? opts->attrs : NULL, opts, NULL, NULL, 0, 0};
    int r = 0;
    if (!c.attrs) {
        r = obi_derivation_attrs_new(drv, drv->name ? drv->name : "the derivation", &own_attrs,
                                     err);
        if (r < 0)
            return obi_error_prefix(err, r, "derivation to build request");
        c.attrs = own_attrs;
    }
    cleanup_build_request obi_build_request *req = obi_build_request_new();
    if (!req)
        return obi_error_oom(err);
    r = set_output_paths(&c, err);
    if (r >= 0)
        r = set_command(&c, req, err);
    if (r >= 0)
        r = set_layout(&c, req, err);
    if (r >= 0)
        r = set_inputs(req, inputs, n_inputs, err);
    if (r >= 0)
        r = set_outputs_and_needles(&c, req, err);
    if (r >= 0)
        r = build_environment(&c, req, err);
    if (r < 0)
        return obi_error_prefix(err, r, "derivation to build request");
    *out = steal_pointer(&req);
    return 0;
}
