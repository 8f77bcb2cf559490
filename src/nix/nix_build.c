/*
 * Building derivations (see include/ocibuild/nix_build.h). Reads top to bottom as the steps:
 * make sure the input derivations' outputs exist (build them first when neither /nix/store nor
 * the own path-info store has them), gather the input closure from both places, turn the
 * derivation into a BuildRequest, run it, and describe and record each output.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ocibuild/array.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/derivation.h"
#include "ocibuild/derivation_request.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/hex.h"
#include "ocibuild/nar.h"
#include "ocibuild/nix_build.h"
#include "ocibuild/nix_output.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/store_roots.h"
#include "ocibuild/strv.h"

/* Input derivations nest; real chains are far shallower than this. */
#define NIX_BUILD_MAX_DEPTH 512

/* One obi_nix_build call: the options, and the /nix/store inputs imported so far (keyed by the
 * list of paths whose closure was taken), so that a chain asks nix-store and imports once. */
typedef struct nix_import {
    char *key;
    obi_node *nodes;
    size_t n_nodes;
} nix_import;

typedef struct build_session {
    const obi_nix_build_options *opts;
    nix_import *imports;
    size_t n_imports, imports_cap;
    obi_store_pin *pin; /* keeps what was imported from /nix/store until the session ends */
} build_session;

static int build_derivation(const char *drv_path, build_session *session, unsigned depth,
                            obi_nix_build_result **out, obi_error **err);

/* ---- where store paths are ---- */

/* Whether path exists in the Nix store on disk (Nix's valid paths, as far as we can tell). */
static bool in_nix_store(const obi_nix_build_options *opts, const char *path)
{
    if (opts->own_store_only)
        return false;
    const char *dir = opts->nix_store_dir ? opts->nix_store_dir : OBI_NIX_STORE_DIR;
    const char *base = strrchr(path, '/');
    cleanup_free char *on_disk = obi_path_join(dir, base ? base + 1 : path);
    struct stat st;
    return on_disk && lstat(on_disk, &st) == 0;
}

/* 1 with *info when the own store has path, 0 when not, negative on a broken record. */
static int own_path_info(const obi_nix_build_options *opts, const char *path,
                         obi_nix_path_info **info, obi_error **err)
{
    cleanup_error obi_error *get_err = NULL;
    int r = obi_nix_path_info_get(opts->path_infos, path, info, &get_err);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return obi_error_move(err, &get_err);
    return 1;
}

/* ---- step 1: input derivations ---- */

static int ensure_input_outputs(const obi_derivation *drv, build_session *session, unsigned depth,
                                obi_error **err)
{
    const obi_nix_build_options *opts = session->opts;
    for (size_t i = 0; i < drv->n_input_drvs; i++) {
        const obi_derivation_input *in = &drv->input_drvs[i];
        cleanup_derivation obi_derivation *input = NULL;
        int r = obi_derivation_read_file(in->drv_path, &input, err);
        if (r < 0)
            return obi_error_prefix(err, r, "input derivation");
        bool missing = false;
        for (size_t k = 0; k < in->n_outputs && !missing; k++) {
            const obi_derivation_output *o = obi_derivation_find_output(input, in->outputs[k]);
            if (!o)
                return obi_error_set(err, -EINVAL, "input derivation %s has no output '%s'",
                                     in->drv_path, in->outputs[k]);
            if (in_nix_store(opts, o->path))
                continue;
            cleanup_nix_path_info obi_nix_path_info *info = NULL;
            r = own_path_info(opts, o->path, &info, err);
            if (r < 0)
                return r;
            missing = r == 0;
        }
        if (!missing)
            continue;
        cleanup_nix_build_result obi_nix_build_result *built = NULL;
        r = build_derivation(in->drv_path, session, depth + 1, &built, err);
        if (r < 0)
            return obi_error_prefix(err, r, "building input %s", in->drv_path);
    }
    return 0;
}

/* ---- step 2: the input closure ---- */

typedef struct closure {
    obi_strv_builder visited;  /* every store path seen */
    obi_strv_builder from_nix; /* paths to take from /nix/store (with their own closure) */
    obi_node *nodes;           /* from the own store, then the imported /nix/store closure */
    size_t n_nodes, nodes_cap;
} closure;

static void closure_clear(closure *c)
{
    obi_strv_builder_clear(&c->visited);
    obi_strv_builder_clear(&c->from_nix);
    obi_nix_nodes_free(c->nodes, c->n_nodes);
}

/* Visits path and, for paths from the own store, their references (depth-first). */
static int closure_visit(closure *c, const obi_nix_build_options *opts, const char *path,
                         obi_error **err)
{
    if (obi_strv_builder_contains(&c->visited, path))
        return 0;
    if (obi_strv_builder_add(&c->visited, path) < 0)
        return obi_error_oom(err);
    if (in_nix_store(opts, path))
        return obi_strv_builder_add(&c->from_nix, path) < 0 ? obi_error_oom(err) : 0;
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    int r = own_path_info(opts, path, &info, err);
    if (r < 0)
        return r;
    if (r == 0 && opts->own_store_only)
        return obi_error_set(err, -ENOENT, "input %s is not valid here (it was not sent)", path);
    if (r == 0)
        return obi_error_set(err, -ENOENT, "%s is neither in the Nix store nor built by ocibuild",
                             path);
    if (obi_array_grow(&c->nodes, &c->nodes_cap, c->n_nodes + 1) < 0)
        return obi_error_oom(err);
    if (obi_node_copy(&c->nodes[c->n_nodes], &info->node) < 0)
        return obi_error_oom(err);
    c->n_nodes++;
    for (size_t i = 0; i < info->n_references; i++) {
        r = closure_visit(c, opts, info->references[i], err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* All input nodes of drv: own-store paths (with their references) and the /nix/store
 * closure of the rest, imported. */
static char *import_key(const obi_strv_builder *paths)
{
    cleanup_buf obi_buf key = OBI_BUF_INIT;
    for (size_t i = 0; i < paths->n; i++)
        if (obi_buf_append_str(&key, paths->items[i]) < 0 || obi_buf_append(&key, "\n", 1) < 0)
            return NULL;
    if (obi_buf_reserve(&key, 0) < 0)
        return NULL;
    return obi_buf_steal(&key);
}

static int copy_nodes(const obi_node *src, size_t n, obi_node *dst)
{
    for (size_t i = 0; i < n; i++)
        if (obi_node_copy(&dst[i], &src[i]) < 0)
            return -ENOMEM;
    return 0;
}

/* The imported /nix/store closure of c's from_nix paths, from the session's cache or from
 * nix-store, appended to c's nodes. */
static int import_from_nix(build_session *session, closure *c, obi_error **err)
{
    const obi_nix_build_options *opts = session->opts;
    const obi_strv_builder *paths = &c->from_nix;
    cleanup_free char *key = import_key(paths);
    if (!key)
        return obi_error_oom(err);
    const nix_import *hit = NULL;
    for (size_t i = 0; i < session->n_imports && !hit; i++)
        if (strcmp(session->imports[i].key, key) == 0)
            hit = &session->imports[i];
    if (!hit) {
        cleanup_strv char **requisites = NULL;
        size_t n_closure = 0;
        int r = obi_nix_store_closure(opts->nix_store, paths->items, paths->n, &requisites,
                                      &n_closure, err);
        if (r < 0)
            return r;
        obi_node *imported = NULL;
        /* gc held off from the first lookup until what was imported is pinned */
        if (!session->pin && (r = obi_store_pin_new(opts->store, &session->pin, err)) < 0)
            return r;
        if ((r = obi_store_pin_hold_gc(session->pin, err)) < 0)
            return r;
        r = obi_nix_import_paths(opts->store->blobs, opts->store->directories, requisites,
                                 n_closure, &imported, err);
        for (size_t i = 0; r >= 0 && i < n_closure; i++)
            r = obi_store_pin_add(session->pin, &imported[i], err);
        obi_store_pin_release_gc(session->pin);
        if (r < 0) {
            if (imported)
                obi_nix_nodes_free(imported, n_closure);
            return r;
        }
        if (obi_array_grow(&session->imports, &session->imports_cap, session->n_imports + 1) < 0) {
            obi_nix_nodes_free(imported, n_closure);
            return obi_error_oom(err);
        }
        nix_import *added = &session->imports[session->n_imports++];
        *added = (nix_import){steal_pointer(&key), imported, n_closure};
        hit = added;
    }
    if (obi_array_grow(&c->nodes, &c->nodes_cap, c->n_nodes + hit->n_nodes) < 0)
        return obi_error_oom(err);
    obi_node *all = c->nodes;
    memset(all + c->n_nodes, 0, hit->n_nodes * sizeof *all);
    int r = copy_nodes(hit->nodes, hit->n_nodes, all + c->n_nodes);
    c->n_nodes += hit->n_nodes; /* counted even on failure: closure_clear frees the copies made */
    return r < 0 ? obi_error_oom(err) : 0;
}

/* All input nodes of drv: own-store paths (with their references) and the /nix/store
 * closure of the rest, imported. */
static int gather_inputs(const obi_derivation *drv, build_session *session, obi_node **nodes_out,
                         size_t *n_out, obi_error **err)
{
    _cleanup_(closure_clear) closure c = {0};
    cleanup_strv char **paths = NULL;
    size_t n_paths = 0;
    int r = obi_derivation_input_paths(drv, &paths, &n_paths, err);
    for (size_t i = 0; r >= 0 && i < n_paths; i++)
        r = closure_visit(&c, session->opts, paths[i], err);
    if (r >= 0 && c.from_nix.n > 0)
        r = import_from_nix(session, &c, err);
    if (r < 0)
        return r;
    *nodes_out = steal_pointer(&c.nodes);
    *n_out = c.n_nodes;
    c.n_nodes = 0;
    return 0;
}

/* ---- step 4: describing outputs ---- */

/* The content address Nix records for a fixed output: "fixed:[r:]<algo>:<nixbase32 hash>". */
static int fixed_output_ca(const obi_derivation_output *o, char **out, obi_error **err)
{
    bool recursive;
    const char *algo;
    size_t len;
    int r = obi_derivation_hash_algo_parse(o->hash_algo, &recursive, &algo, &len, err);
    if (r < 0)
        return r;
    uint8_t digest[64];
    if (strlen(o->hash) != 2 * len || obi_hex_decode(o->hash, 2 * len, digest, len) < 0)
        return obi_error_set(err, -EINVAL, "output %s: hash '%s' is not %zu bytes of hex", o->name,
                             o->hash, len);
    char text[128];
    obi_nixbase32_encode(digest, len, text);
    text[obi_nixbase32_encoded_len(len)] = '\0';
    if (asprintf(out, "fixed:%s%s:%s", recursive ? "r:" : "", algo, text) < 0) {
        *out = NULL;
        return obi_error_oom(err);
    }
    return 0;
}

static int describe_output(const obi_derivation *drv, const obi_build_request *req,
                           const obi_build *build, size_t index, const obi_nix_build_options *opts,
                           obi_nix_build_output *out, obi_error **err)
{
    const char *request_output = req->outputs[index];
    const obi_derivation_output *o = NULL;
    for (size_t i = 0; i < drv->n_outputs && !o; i++)
        if (strcmp(drv->outputs[i].path + 1, request_output) == 0)
            o = &drv->outputs[i];
    if (!o)
        return obi_error_set(err, -EINVAL, "build output %s is not an output of the derivation",
                             request_output);
    const obi_node *node = &build->outputs[index];
    obi_nix_path_info *info = calloc(1, sizeof *info);
    if (!info)
        return obi_error_oom(err);
    out->info = info;
    out->name = strdup(o->name);
    info->path = strdup(o->path);
    if (!out->name || !info->path || obi_node_copy(&info->node, node) < 0)
        return obi_error_oom(err);
    const char *base = strrchr(o->path, '/') + 1;
    if (obi_node_set_name(&info->node, base, strlen(base)) < 0)
        return obi_error_oom(err);

    int r = obi_nix_output_references(drv, req, &build->outputs_needles[index], &info->references,
                                      &info->n_references, err);
    if (r >= 0)
        r = obi_nar_hash_node(opts->store->blobs, opts->store->directories, &info->node, &info->nar,
                              err);
    if (r < 0)
        return obi_error_prefix(err, r, "output '%s'", o->name);
    if (obi_derivation_is_fixed_output(drv)) {
        r = obi_nix_check_fixed_output(opts->store->blobs, opts->store->directories, o, &info->node,
                                       err);
        if (r < 0)
            return r;
        if (info->n_references > 0)
            return obi_error_set(err, -EINVAL,
                                 "fixed-output derivation '%s' must not reference store paths "
                                 "(it references %s)",
                                 o->path, info->references[0]);
        return fixed_output_ca(o, &info->ca, err);
    }
    return 0;
}

/* Puts the outputs in the derivation's order. */
static int order_outputs(const obi_derivation *drv, obi_nix_build_result *result)
{
    for (size_t i = 0; i < drv->n_outputs; i++)
        for (size_t k = i; k < result->n_outputs; k++)
            if (strcmp(result->outputs[k].name, drv->outputs[i].name) == 0) {
                obi_nix_build_output tmp = result->outputs[i];
                result->outputs[i] = result->outputs[k];
                result->outputs[k] = tmp;
                break;
            }
    return 0;
}

/* ---- the whole build ---- */

static int build_parsed(const char *drv_path, const obi_derivation *drv, build_session *session,
                        unsigned depth, obi_nix_build_result **out, obi_error **err)
{
    const obi_nix_build_options *opts = session->opts;
    int r = ensure_input_outputs(drv, session, depth, err);
    if (r < 0)
        return r;

    obi_node *inputs = NULL;
    size_t n_inputs = 0;
    r = gather_inputs(drv, session, &inputs, &n_inputs, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s: inputs", drv_path);
    cleanup_build_request obi_build_request *req = NULL;
    obi_derivation_request_options request_opts = {.build_cores = opts->build_cores};
    r = obi_derivation_to_build_request(drv, inputs, n_inputs, &request_opts, &req, err);
    obi_nix_nodes_free(inputs, n_inputs);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", drv_path);

    cleanup_build obi_build *build = NULL;
    r = obi_build_service_do_build_call(opts->builder, req, opts->call, &build, err);
    if (r < 0)
        return obi_error_prefix(err, r, "build of %s", drv_path);
    if (build->n_outputs != req->n_outputs || (req->n_outputs && !build->outputs_needles))
        return obi_error_set(err, -EIO, "build of %s: the builder returned %zu outputs for %zu",
                             drv_path, build->n_outputs, req->n_outputs);

    cleanup_nix_build_result obi_nix_build_result *result = calloc(1, sizeof *result);
    if (!result || !(result->outputs = calloc(req->n_outputs + 1, sizeof *result->outputs)))
        return obi_error_oom(err);
    for (size_t i = 0; i < req->n_outputs; i++) {
        r = describe_output(drv, req, build, i, opts, &result->outputs[i], err);
        result->n_outputs++;
        if (r < 0)
            return obi_error_prefix(err, r, "build of %s", drv_path);
    }
    order_outputs(drv, result);
    for (size_t i = 0; i < result->n_outputs; i++) {
        r = obi_nix_path_info_record(opts->store, opts->path_infos, result->outputs[i].info, err);
        if (r < 0)
            return obi_error_prefix(err, r, "recording %s", result->outputs[i].info->path);
    }
    *out = steal_pointer(&result);
    return 0;
}

static int build_derivation(const char *drv_path, build_session *session, unsigned depth,
                            obi_nix_build_result **out, obi_error **err)
{
    if (depth > NIX_BUILD_MAX_DEPTH)
        return obi_error_set(err, -ELOOP, "%s: input derivations nested deeper than %d", drv_path,
                             NIX_BUILD_MAX_DEPTH);
    cleanup_derivation obi_derivation *drv = NULL;
    int r = obi_derivation_read_file(drv_path, &drv, err);
    if (r < 0)
        return r;
    return build_parsed(drv_path, drv, session, depth, out, err);
}

static void build_session_clear(build_session *session)
{
    for (size_t i = 0; i < session->n_imports; i++) {
        free(session->imports[i].key);
        obi_nix_nodes_free(session->imports[i].nodes, session->imports[i].n_nodes);
    }
    free(session->imports);
    obi_store_pin_free(session->pin);
}

int obi_nix_build(const char *drv_path, const obi_nix_build_options *opts,
                  obi_nix_build_result **out, obi_error **err)
{
    _cleanup_(build_session_clear) build_session session = {opts, NULL, 0, 0, NULL};
    return build_derivation(drv_path, &session, 0, out, err);
}

int obi_nix_build_derivation(const char *drv_path, const obi_derivation *drv,
                             const obi_nix_build_options *opts, obi_nix_build_result **out,
                             obi_error **err)
{
    _cleanup_(build_session_clear) build_session session = {opts, NULL, 0, 0, NULL};
    return build_parsed(drv_path, drv, &session, 0, out, err);
}

void obi_nix_build_result_free(obi_nix_build_result *result)
{
    if (!result)
        return;
    for (size_t i = 0; i < result->n_outputs; i++) {
        free(result->outputs[i].name);
        obi_nix_path_info_free(result->outputs[i].info);
    }
    free(result->outputs);
    free(result);
}

json_t *obi_nix_build_result_to_json(const obi_nix_build_result *result)
{
    json_t *root = json_object(), *outputs = json_object();
    bool ok = root && outputs && json_object_set(root, "outputs", outputs) == 0;
    for (size_t i = 0; ok && i < result->n_outputs; i++) {
        const obi_nix_path_info *info = result->outputs[i].info;
        cleanup_free char *nar_hash = obi_nar_hash_to_string(&info->nar);
        json_t *refs = json_array(), *output = json_object();
        ok = nar_hash && refs && output;
        for (size_t k = 0; ok && k < info->n_references; k++)
            ok = json_array_append_new(refs, json_string(info->references[k])) == 0;
        ok = ok && json_object_set_new(output, "path", json_string(info->path)) == 0 &&
             json_object_set_new(output, "narHash", json_string(nar_hash)) == 0 &&
             json_object_set(output, "references", refs) == 0 &&
             json_object_set(outputs, result->outputs[i].name, output) == 0;
        json_decref(refs);
        json_decref(output);
    }
    json_decref(outputs);
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    return root;
}
