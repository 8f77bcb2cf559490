/*
 * BuildRequest and Build in protobuf binary form, through the protobuf-c code generated from
 * proto/tvix/build/v1/build.proto; nodes go through node_pb.h. Decoding goes through
 * obi_pb_unpack (pb_wire.h), whose check refuses what protobuf-c would let through (strings
 * that are not UTF-8 or hold a NUL, which protobuf-c would silently cut, as prost refuses them
 * for tvix) naming the field, index and byte offset. Decoding does not validate: call
 * obi_build_request_validate. A new field is converted in request_from_pb and request_pb_init.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "build.pb-c.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/node_pb.h"
#include "ocibuild/pb_wire.h"
#include "ocibuild/request.h"
#include "request_internal.h"

/* ---- protobuf-c -> model ---- */

static int strings_from_pb(char **src, size_t n, char ***dst, size_t *n_dst)
{
    int r = obi_strings_copy(src, n, dst);
    if (r == 0)
        *n_dst = n;
    return r;
}

static int nodes_from_pb(Tvix__Castore__V1__Node **src, size_t n, const char *field, obi_node **dst,
                         size_t *n_dst, obi_error **err)
{
    if (n == 0)
        return 0;
    *dst = calloc(n, sizeof **dst);
    if (!*dst)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++) {
        int r = obi_node_from_pb(src[i], &(*dst)[i], err);
        if (r < 0)
            return obi_error_prefix(err, r, "%s[%zu]", field, i);
        (*n_dst)++;
    }
    return 0;
}

static int request_from_pb(const Tvix__Build__V1__BuildRequest *pb, obi_build_request **out,
                           obi_error **err)
{
    cleanup_build_request obi_build_request *req = obi_build_request_new();
    if (!req)
        goto oom;
    int r = nodes_from_pb(pb->inputs, pb->n_inputs, "inputs", &req->inputs, &req->n_inputs, err);
    if (r < 0)
        return r;
    if (strings_from_pb(pb->command_args, pb->n_command_args, &req->command_args,
                        &req->n_command_args) < 0 ||
        strings_from_pb(pb->scratch_paths, pb->n_scratch_paths, &req->scratch_paths,
                        &req->n_scratch_paths) < 0 ||
        strings_from_pb(pb->outputs, pb->n_outputs, &req->outputs, &req->n_outputs) < 0 ||
        strings_from_pb(pb->refscan_needles, pb->n_refscan_needles, &req->refscan_needles,
                        &req->n_refscan_needles) < 0)
        goto oom;
    free(req->working_dir);
    free(req->inputs_dir);
    req->working_dir = strdup(pb->working_dir ? pb->working_dir : "");
    req->inputs_dir = strdup(pb->inputs_dir ? pb->inputs_dir : "");
    if (!req->working_dir || !req->inputs_dir)
        goto oom;
    if (pb->n_environment_vars) {
        req->environment_vars = calloc(pb->n_environment_vars, sizeof *req->environment_vars);
        if (!req->environment_vars)
            goto oom;
        for (size_t i = 0; i < pb->n_environment_vars; i++) {
            const Tvix__Build__V1__BuildRequest__EnvVar *e = pb->environment_vars[i];
            obi_env_var *d = &req->environment_vars[req->n_environment_vars++];
            d->key = strdup(e->key ? e->key : "");
            if (!d->key || obi_bytes_set(&d->value, e->value.data, e->value.len) < 0)
                goto oom;
        }
    }
    if (pb->n_additional_files) {
        req->additional_files = calloc(pb->n_additional_files, sizeof *req->additional_files);
        if (!req->additional_files)
            goto oom;
        for (size_t i = 0; i < pb->n_additional_files; i++) {
            const Tvix__Build__V1__BuildRequest__AdditionalFile *f = pb->additional_files[i];
            obi_additional_file *d = &req->additional_files[req->n_additional_files++];
            d->path = strdup(f->path ? f->path : "");
            if (!d->path || obi_bytes_set(&d->contents, f->contents.data, f->contents.len) < 0)
                goto oom;
        }
    }
    if (pb->constraints) {
        const Tvix__Build__V1__BuildRequest__BuildConstraints *c = pb->constraints;
        req->has_constraints = true;
        free(req->constraints.system);
        req->constraints.system = strdup(c->system ? c->system : "");
        if (!req->constraints.system)
            goto oom;
        req->constraints.min_memory = c->min_memory;
        req->constraints.network_access = c->network_access;
        req->constraints.provide_bin_sh = c->provide_bin_sh;
        req->constraints.hide_sys = c->hide_sys;
        if (strings_from_pb(c->available_ro_paths, c->n_available_ro_paths,
                            &req->constraints.available_ro_paths,
                            &req->constraints.n_available_ro_paths) < 0)
            goto oom;
    }
    *out = steal_pointer(&req);
    return 0;
oom:
    return obi_error_oom(err);
}

int obi_build_request_decode_pb(const uint8_t *data, size_t len, obi_build_request **out,
                                obi_error **err)
{
    ProtobufCMessage *msg = NULL;
    int r = obi_pb_unpack(&tvix__build__v1__build_request__descriptor, data, len, &msg, err);
    if (r < 0)
        return obi_error_prefix(err, r, "decode BuildRequest");
    r = request_from_pb((const Tvix__Build__V1__BuildRequest *)msg, out, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    return r < 0 ? obi_error_prefix(err, r, "decode BuildRequest") : 0;
}

/* ---- model -> protobuf-c: the pb structs borrow the model's strings and bytes ---- */

typedef struct request_pb {
    Tvix__Build__V1__BuildRequest msg;
    Tvix__Build__V1__BuildRequest__BuildConstraints constraints;
    Tvix__Build__V1__BuildRequest__EnvVar *env;
    Tvix__Build__V1__BuildRequest__EnvVar **env_ptrs;
    Tvix__Build__V1__BuildRequest__AdditionalFile *files;
    Tvix__Build__V1__BuildRequest__AdditionalFile **file_ptrs;
} request_pb;

static void pb_nodes_free(Tvix__Castore__V1__Node **nodes, size_t n)
{
    if (!nodes)
        return;
    for (size_t i = 0; i < n; i++)
        obi_node_pb_free(nodes[i]);
    free(nodes);
}

static int pb_nodes_from(const obi_node *nodes, size_t n, Tvix__Castore__V1__Node ***out)
{
    *out = NULL;
    if (n == 0)
        return 0;
    Tvix__Castore__V1__Node **v = calloc(n, sizeof *v);
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        v[i] = obi_node_to_pb(&nodes[i]);
        if (!v[i]) {
            pb_nodes_free(v, i);
            return -ENOMEM;
        }
    }
    *out = v;
    return 0;
}

static void request_pb_clear(request_pb *p)
{
    pb_nodes_free(p->msg.inputs, p->msg.n_inputs);
    free(p->env);
    free(p->env_ptrs);
    free(p->files);
    free(p->file_ptrs);
}

static int request_pb_init(request_pb *p, const obi_build_request *req)
{
    memset(p, 0, sizeof *p);
    tvix__build__v1__build_request__init(&p->msg);
    if (pb_nodes_from(req->inputs, req->n_inputs, &p->msg.inputs) < 0)
        return -ENOMEM;
    p->msg.n_inputs = req->n_inputs;
    p->msg.n_command_args = req->n_command_args;
    p->msg.command_args = req->command_args;
    p->msg.working_dir = req->working_dir ? req->working_dir : "";
    p->msg.n_scratch_paths = req->n_scratch_paths;
    p->msg.scratch_paths = req->scratch_paths;
    p->msg.inputs_dir = req->inputs_dir ? req->inputs_dir : "";
    p->msg.n_outputs = req->n_outputs;
    p->msg.outputs = req->outputs;
    p->msg.n_refscan_needles = req->n_refscan_needles;
    p->msg.refscan_needles = req->refscan_needles;
    if (req->n_environment_vars) {
        p->env = calloc(req->n_environment_vars, sizeof *p->env);
        p->env_ptrs = calloc(req->n_environment_vars, sizeof *p->env_ptrs);
        if (!p->env || !p->env_ptrs)
            return -ENOMEM;
        for (size_t i = 0; i < req->n_environment_vars; i++) {
            tvix__build__v1__build_request__env_var__init(&p->env[i]);
            p->env[i].key = req->environment_vars[i].key;
            p->env[i].value.data = req->environment_vars[i].value.data;
            p->env[i].value.len = req->environment_vars[i].value.len;
            p->env_ptrs[i] = &p->env[i];
        }
        p->msg.n_environment_vars = req->n_environment_vars;
        p->msg.environment_vars = p->env_ptrs;
    }
    if (req->n_additional_files) {
        p->files = calloc(req->n_additional_files, sizeof *p->files);
        p->file_ptrs = calloc(req->n_additional_files, sizeof *p->file_ptrs);
        if (!p->files || !p->file_ptrs)
            return -ENOMEM;
        for (size_t i = 0; i < req->n_additional_files; i++) {
            tvix__build__v1__build_request__additional_file__init(&p->files[i]);
            p->files[i].path = req->additional_files[i].path;
            p->files[i].contents.data = req->additional_files[i].contents.data;
            p->files[i].contents.len = req->additional_files[i].contents.len;
            p->file_ptrs[i] = &p->files[i];
        }
        p->msg.n_additional_files = req->n_additional_files;
        p->msg.additional_files = p->file_ptrs;
    }
    if (req->has_constraints) {
        const obi_build_constraints *c = &req->constraints;
        tvix__build__v1__build_request__build_constraints__init(&p->constraints);
        p->constraints.system = c->system ? c->system : "";
        p->constraints.min_memory = c->min_memory;
        p->constraints.n_available_ro_paths = c->n_available_ro_paths;
        p->constraints.available_ro_paths = c->available_ro_paths;
        p->constraints.network_access = c->network_access;
        p->constraints.provide_bin_sh = c->provide_bin_sh;
        p->constraints.hide_sys = c->hide_sys;
        p->msg.constraints = &p->constraints;
    }
    return 0;
}

static int pack(const ProtobufCMessage *msg, const char *what, uint8_t **out, size_t *out_len,
                obi_error **err)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *data = malloc(len ? len : 1);
    if (!data)
        return obi_error_set(err, -ENOMEM, "encode %s: out of memory", what);
    protobuf_c_message_pack(msg, data);
    *out = data;
    *out_len = len;
    return 0;
}

int obi_build_request_encode_pb(const obi_build_request *req, uint8_t **out, size_t *out_len,
                                obi_error **err)
{
    request_pb p;
    int r = request_pb_init(&p, req);
    if (r == 0)
        r = pack(&p.msg.base, "BuildRequest", out, out_len, err);
    else
        r = obi_error_set(err, r, "encode BuildRequest: out of memory");
    request_pb_clear(&p);
    return r;
}

/* ---- Build ---- */

int obi_build_encode_pb(const obi_build *build, uint8_t **out, size_t *out_len, obi_error **err)
{
    Tvix__Build__V1__Build msg;
    tvix__build__v1__build__init(&msg);
    request_pb req;
    bool have_req = false;
    Tvix__Build__V1__Build__OutputNeedles *needles = NULL;
    Tvix__Build__V1__Build__OutputNeedles **needle_ptrs = NULL;
    int r = 0;
    if (build->request) {
        have_req = true;
        if ((r = request_pb_init(&req, build->request)) < 0)
            goto done;
        msg.build_request = &req.msg;
    }
    if ((r = pb_nodes_from(build->outputs, build->n_outputs, &msg.outputs)) < 0)
        goto done;
    msg.n_outputs = build->n_outputs;
    if (build->n_outputs && build->outputs_needles) {
        needles = calloc(build->n_outputs, sizeof *needles);
        needle_ptrs = calloc(build->n_outputs, sizeof *needle_ptrs);
        if (!needles || !needle_ptrs) {
            r = -ENOMEM;
            goto done;
        }
        for (size_t i = 0; i < build->n_outputs; i++) {
            tvix__build__v1__build__output_needles__init(&needles[i]);
            needles[i].n_needles = build->outputs_needles[i].n_needles;
            needles[i].needles = build->outputs_needles[i].needles;
            needle_ptrs[i] = &needles[i];
        }
        msg.n_outputs_needles = build->n_outputs;
        msg.outputs_needles = needle_ptrs;
    }
    r = pack(&msg.base, "Build", out, out_len, err);
done:
    if (r == -ENOMEM)
        r = obi_error_set(err, r, "encode Build: out of memory");
    if (have_req)
        request_pb_clear(&req);
    pb_nodes_free(msg.outputs, msg.n_outputs);
    free(needles);
    free(needle_ptrs);
    return r;
}

static int build_from_pb(const Tvix__Build__V1__Build *pb, obi_build **out, obi_error **err)
{
    cleanup_build obi_build *build = obi_build_new();
    if (!build)
        return obi_error_oom(err);
    int r;
    if (pb->build_request && (r = request_from_pb(pb->build_request, &build->request, err)) < 0)
        return obi_error_prefix(err, r, "build_request");
    if ((r = nodes_from_pb(pb->outputs, pb->n_outputs, "outputs", &build->outputs,
                           &build->n_outputs, err)) < 0)
        return r;
    if (pb->n_outputs_needles != 0 && pb->n_outputs_needles != pb->n_outputs)
        return obi_error_set(err, -EINVAL, "outputs_needles: %zu entries for %zu outputs",
                             pb->n_outputs_needles, pb->n_outputs);
    if (pb->n_outputs) {
        build->outputs_needles = calloc(pb->n_outputs, sizeof *build->outputs_needles);
        if (!build->outputs_needles)
            return obi_error_oom(err);
    }
    for (size_t i = 0; i < pb->n_outputs_needles; i++) {
        const Tvix__Build__V1__Build__OutputNeedles *n = pb->outputs_needles[i];
        if (!n->n_needles)
            continue;
        uint64_t *v = malloc(n->n_needles * sizeof *v);
        if (!v)
            return obi_error_oom(err);
        memcpy(v, n->needles, n->n_needles * sizeof *v);
        build->outputs_needles[i].needles = v;
        build->outputs_needles[i].n_needles = n->n_needles;
    }
    *out = steal_pointer(&build);
    return 0;
}

int obi_build_decode_pb(const uint8_t *data, size_t len, obi_build **out, obi_error **err)
{
    ProtobufCMessage *msg = NULL;
    int r = obi_pb_unpack(&tvix__build__v1__build__descriptor, data, len, &msg, err);
    if (r < 0)
        return obi_error_prefix(err, r, "decode Build");
    r = build_from_pb((const Tvix__Build__V1__Build *)msg, out, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    return r < 0 ? obi_error_prefix(err, r, "decode Build") : 0;
}
