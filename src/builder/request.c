/*
 * The BuildRequest and Build model (include/ocibuild/request.h): construction, deep copy and
 * freeing. The wire codecs live in request_codec.c (protobuf) and request_json.c (protobuf
 * JSON), the rules in request_validate.c; they all share the small helpers declared in
 * request_internal.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/request.h"
#include "request_internal.h"

void obi_strings_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int obi_strings_copy(char *const *src, size_t n, char ***out)
{
    *out = NULL;
    if (n == 0)
        return 0;
    char **v = calloc(n, sizeof *v);
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        v[i] = strdup(src[i]);
        if (!v[i]) {
            obi_strings_free(v, i);
            return -ENOMEM;
        }
    }
    *out = v;
    return 0;
}

static void nodes_free(obi_node *nodes, size_t n)
{
    if (!nodes)
        return;
    for (size_t i = 0; i < n; i++)
        obi_node_clear(&nodes[i]);
    free(nodes);
}

static int nodes_copy(const obi_node *src, size_t n, obi_node **out)
{
    *out = NULL;
    if (n == 0)
        return 0;
    obi_node *v = calloc(n, sizeof *v);
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (obi_node_copy(&v[i], &src[i]) < 0) {
            nodes_free(v, i);
            return -ENOMEM;
        }
    }
    *out = v;
    return 0;
}

obi_build_request *obi_build_request_new(void)
{
    obi_build_request *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->working_dir = strdup("");
    req->inputs_dir = strdup("");
    req->constraints.system = strdup("");
    if (!req->working_dir || !req->inputs_dir || !req->constraints.system) {
        obi_build_request_free(req);
        return NULL;
    }
    return req;
}

void obi_build_request_free(obi_build_request *req)
{
    if (!req)
        return;
    nodes_free(req->inputs, req->n_inputs);
    obi_strings_free(req->command_args, req->n_command_args);
    free(req->working_dir);
    obi_strings_free(req->scratch_paths, req->n_scratch_paths);
    free(req->inputs_dir);
    obi_strings_free(req->outputs, req->n_outputs);
    for (size_t i = 0; i < req->n_environment_vars; i++) {
        free(req->environment_vars[i].key);
        obi_bytes_clear(&req->environment_vars[i].value);
    }
    free(req->environment_vars);
    free(req->constraints.system);
    obi_strings_free(req->constraints.available_ro_paths, req->constraints.n_available_ro_paths);
    for (size_t i = 0; i < req->n_additional_files; i++) {
        free(req->additional_files[i].path);
        obi_bytes_clear(&req->additional_files[i].contents);
    }
    free(req->additional_files);
    obi_strings_free(req->refscan_needles, req->n_refscan_needles);
    free(req);
}

static int copy_string(const char *src, char **dst)
{
    free(*dst);
    *dst = strdup(src ? src : "");
    return *dst ? 0 : -ENOMEM;
}

static int copy_env(const obi_build_request *src, obi_build_request *dst)
{
    if (src->n_environment_vars == 0)
        return 0;
    dst->environment_vars = calloc(src->n_environment_vars, sizeof *dst->environment_vars);
    if (!dst->environment_vars)
        return -ENOMEM;
    for (size_t i = 0; i < src->n_environment_vars; i++) {
        const obi_env_var *e = &src->environment_vars[i];
        obi_env_var *d = &dst->environment_vars[dst->n_environment_vars++];
        if (copy_string(e->key, &d->key) < 0 ||
            obi_bytes_set(&d->value, e->value.data, e->value.len) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int copy_additional_files(const obi_build_request *src, obi_build_request *dst)
{
    if (src->n_additional_files == 0)
        return 0;
    dst->additional_files = calloc(src->n_additional_files, sizeof *dst->additional_files);
    if (!dst->additional_files)
        return -ENOMEM;
    for (size_t i = 0; i < src->n_additional_files; i++) {
        const obi_additional_file *f = &src->additional_files[i];
        obi_additional_file *d = &dst->additional_files[dst->n_additional_files++];
        if (copy_string(f->path, &d->path) < 0 ||
            obi_bytes_set(&d->contents, f->contents.data, f->contents.len) < 0)
            return -ENOMEM;
    }
    return 0;
}

#define COPY_STRINGS(field)                                                                        \
    do {                                                                                           \
        if (obi_strings_copy(req->field, req->n_##field, &copy->field) < 0)                        \
            goto oom;                                                                              \
        copy->n_##field = req->n_##field;                                                          \
    } while (0)

int obi_build_request_copy(const obi_build_request *req, obi_build_request **out, obi_error **err)
{
    cleanup_build_request obi_build_request *copy = obi_build_request_new();
    if (!copy)
        goto oom;
    if (nodes_copy(req->inputs, req->n_inputs, &copy->inputs) < 0)
        goto oom;
    copy->n_inputs = req->n_inputs;
    COPY_STRINGS(command_args);
    COPY_STRINGS(scratch_paths);
    COPY_STRINGS(outputs);
    COPY_STRINGS(refscan_needles);
    if (copy_string(req->working_dir, &copy->working_dir) < 0 ||
        copy_string(req->inputs_dir, &copy->inputs_dir) < 0)
        goto oom;
    if (copy_env(req, copy) < 0 || copy_additional_files(req, copy) < 0)
        goto oom;
    copy->has_constraints = req->has_constraints;
    const obi_build_constraints *c = &req->constraints;
    obi_build_constraints *d = &copy->constraints;
    if (copy_string(c->system, &d->system) < 0)
        goto oom;
    d->min_memory = c->min_memory;
    d->network_access = c->network_access;
    d->provide_bin_sh = c->provide_bin_sh;
    d->hide_sys = c->hide_sys;
    if (obi_strings_copy(c->available_ro_paths, c->n_available_ro_paths, &d->available_ro_paths) <
        0)
        goto oom;
    d->n_available_ro_paths = c->n_available_ro_paths;
    *out = steal_pointer(&copy);
    return 0;
oom:
    return obi_error_set(err, -ENOMEM, "copy build request: out of memory");
}

obi_build *obi_build_new(void)
{
    return calloc(1, sizeof(obi_build));
}

void obi_build_free(obi_build *build)
{
    if (!build)
        return;
    obi_build_request_free(build->request);
    nodes_free(build->outputs, build->n_outputs);
    if (build->outputs_needles) {
        for (size_t i = 0; i < build->n_outputs; i++)
            free(build->outputs_needles[i].needles);
        free(build->outputs_needles);
    }
    free(build);
}
