/*
 * BuildRequest and Build in protobuf's canonical JSON mapping (jansson), the form the CLI
 * reads. Input: lowerCamelCase and original snake_case names are both accepted (the same field
 * twice is refused), null means the default, bytes are standard or URL-safe base64, uint64 a
 * decimal string or a number; unknown fields are refused by name. Output: lowerCamelCase,
 * defaults omitted, uint64 as strings, as protobuf's JSON printer writes it. Errors name the
 * field path in proto names: "environment_vars[3].value: invalid base64 ...".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/json_util.h"
#include "ocibuild/request.h"
#include "request_internal.h"

typedef struct json_field {
    const char *proto_name;
    const char *json_name;
} json_field;

/* The values of an object's known fields, in table order; NULL when absent or null. Refuses
 * unknown fields and a field given under both names. */
static int object_fields(const json_t *obj, const char *where, const json_field *fields,
                         size_t n_fields, const json_t **values, obi_error **err)
{
    if (!json_is_object(obj))
        return obi_error_set(err, -EINVAL, "%s: expected an object", where);
    for (size_t i = 0; i < n_fields; i++)
        values[i] = NULL;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        size_t i = 0;
        while (i < n_fields && strcmp(key, fields[i].proto_name) != 0 &&
               strcmp(key, fields[i].json_name) != 0)
            i++;
        if (i == n_fields)
            return obi_error_set(err, -EINVAL, "%s: unknown field \"%s\"", where, key);
        if (json_is_null(value))
            continue;
        if (values[i])
            return obi_error_set(err, -EINVAL, "%s: field %s given twice (as %s and %s)", where,
                                 fields[i].proto_name, fields[i].json_name, fields[i].proto_name);
        values[i] = value;
    }
    return 0;
}

static int get_string(const json_t *v, const char *field, char **out, obi_error **err)
{
    if (!v) {
        free(*out);
        *out = strdup("");
        return *out ? 0 : obi_error_oom(err);
    }
    if (!json_is_string(v))
        return obi_error_set(err, -EINVAL, "%s: expected a string", field);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (strlen(s) != len)
        return obi_error_set(err, -EINVAL, "%s: string contains NUL", field);
    char *copy = strdup(s);
    if (!copy)
        return obi_error_oom(err);
    free(*out);
    *out = copy;
    return 0;
}

static int get_string_list(const json_t *v, const char *field, char ***out, size_t *n_out,
                           obi_error **err)
{
    if (!v)
        return 0;
    if (!json_is_array(v))
        return obi_error_set(err, -EINVAL, "%s: expected an array of strings", field);
    size_t n = json_array_size(v);
    if (n == 0)
        return 0;
    char **list = calloc(n, sizeof *list);
    if (!list)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s[%zu]", field, i);
        const json_t *item = json_array_get(v, i);
        int r = json_is_null(item) ? obi_error_set(err, -EINVAL, "%s: expected a string", name)
                                   : get_string(item, name, &list[i], err);
        if (r < 0) {
            obi_strings_free(list, n);
            return r;
        }
    }
    *out = list;
    *n_out = n;
    return 0;
}

static int get_bytes(const json_t *v, const char *field, obi_bytes *out, obi_error **err)
{
    obi_bytes_clear(out);
    if (!v)
        return obi_bytes_set(out, "", 0) < 0 ? obi_error_oom(err) : 0;
    if (!json_is_string(v))
        return obi_error_set(err, -EINVAL, "%s: expected a base64 string", field);
    cleanup_free uint8_t *data = NULL;
    size_t len = 0;
    int r = obi_base64_decode(json_string_value(v), json_string_length(v), &data, &len, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", field);
    if (obi_bytes_set(out, data, len) < 0)
        return obi_error_oom(err);
    return 0;
}

static int get_bool(const json_t *v, const char *field, bool *out, obi_error **err)
{
    if (!v) {
        *out = false;
        return 0;
    }
    if (!json_is_boolean(v))
        return obi_error_set(err, -EINVAL, "%s: expected true or false", field);
    *out = json_is_true(v);
    return 0;
}

static int get_uint64(const json_t *v, const char *field, uint64_t *out, obi_error **err)
{
    if (!v) {
        *out = 0;
        return 0;
    }
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0)
            return obi_error_set(err, -EINVAL, "%s: %lld is negative", field, (long long)i);
        *out = (uint64_t)i;
        return 0;
    }
    if (!json_is_string(v))
        return obi_error_set(err, -EINVAL, "%s: expected an unsigned integer (number or string)",
                             field);
    const char *s = json_string_value(v);
    uint64_t value = 0;
    if (strlen(s) != json_string_length(v))
        return obi_error_set(err, -EINVAL, "%s: string contains NUL", field);
    if (!*s)
        return obi_error_set(err, -EINVAL, "%s: empty string is not a number", field);
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return obi_error_set(err, -EINVAL, "%s: \"%s\" is not an unsigned decimal integer",
                                 field, s);
        unsigned d = (unsigned)(*p - '0');
        if (value > (UINT64_MAX - d) / 10)
            return obi_error_set(err, -ERANGE, "%s: \"%s\" does not fit in 64 bits", field, s);
        value = value * 10 + d;
    }
    *out = value;
    return 0;
}

static const json_t *array_or_empty(const json_t *v, const char *field, obi_error **err, int *r)
{
    *r = 0;
    if (v && !json_is_array(v))
        *r = obi_error_set(err, -EINVAL, "%s: expected an array", field);
    return v;
}

/* ---- BuildRequest from JSON ---- */

enum {
    F_INPUTS,
    F_COMMAND_ARGS,
    F_WORKING_DIR,
    F_SCRATCH_PATHS,
    F_INPUTS_DIR,
    F_OUTPUTS,
    F_ENVIRONMENT_VARS,
    F_CONSTRAINTS,
    F_ADDITIONAL_FILES,
    F_REFSCAN_NEEDLES,
};
static const json_field REQUEST_FIELDS[] = {
    [F_INPUTS] = {"inputs", "inputs"},
    [F_COMMAND_ARGS] = {"command_args", "commandArgs"},
    [F_WORKING_DIR] = {"working_dir", "workingDir"},
    [F_SCRATCH_PATHS] = {"scratch_paths", "scratchPaths"},
    [F_INPUTS_DIR] = {"inputs_dir", "inputsDir"},
    [F_OUTPUTS] = {"outputs", "outputs"},
    [F_ENVIRONMENT_VARS] = {"environment_vars", "environmentVars"},
    [F_CONSTRAINTS] = {"constraints", "constraints"},
    [F_ADDITIONAL_FILES] = {"additional_files", "additionalFiles"},
    [F_REFSCAN_NEEDLES] = {"refscan_needles", "refscanNeedles"},
};

static const json_field ENV_FIELDS[] = {{"key", "key"}, {"value", "value"}};
static const json_field FILE_FIELDS[] = {{"path", "path"}, {"contents", "contents"}};
enum { C_SYSTEM, C_MIN_MEMORY, C_RO_PATHS, C_NETWORK, C_BIN_SH, C_HIDE_SYS };
static const json_field CONSTRAINT_FIELDS[] = {
    [C_SYSTEM] = {"system", "system"},
    [C_MIN_MEMORY] = {"min_memory", "minMemory"},
    [C_RO_PATHS] = {"available_ro_paths", "availableRoPaths"},
    [C_NETWORK] = {"network_access", "networkAccess"},
    [C_BIN_SH] = {"provide_bin_sh", "provideBinSh"},
    [C_HIDE_SYS] = {"hide_sys", "hideSys"},
};

static int inputs_from_json(const json_t *v, const char *prefix, obi_build_request *req,
                            obi_error **err)
{
    char field[96];
    snprintf(field, sizeof field, "%sinputs", prefix);
    int r;
    v = array_or_empty(v, field, err, &r);
    if (r < 0 || !v || json_array_size(v) == 0)
        return r;
    req->inputs = calloc(json_array_size(v), sizeof *req->inputs);
    if (!req->inputs)
        return obi_error_oom(err);
    for (size_t i = 0; i < json_array_size(v); i++) {
        r = obi_node_from_json(json_array_get(v, i), &req->inputs[i], err);
        if (r < 0)
            return obi_error_prefix(err, r, "%s[%zu]", field, i);
        req->n_inputs++;
    }
    return 0;
}

static int env_from_json(const json_t *v, const char *prefix, obi_build_request *req,
                         obi_error **err)
{
    char field[96];
    snprintf(field, sizeof field, "%senvironment_vars", prefix);
    int r;
    v = array_or_empty(v, field, err, &r);
    if (r < 0 || !v || json_array_size(v) == 0)
        return r;
    req->environment_vars = calloc(json_array_size(v), sizeof *req->environment_vars);
    if (!req->environment_vars)
        return obi_error_oom(err);
    for (size_t i = 0; i < json_array_size(v); i++) {
        char item[128], sub[160];
        snprintf(item, sizeof item, "%s[%zu]", field, i);
        const json_t *values[2] = {NULL, NULL};
        obi_env_var *e = &req->environment_vars[req->n_environment_vars++];
        if ((r = object_fields(json_array_get(v, i), item, ENV_FIELDS, 2, values, err)) < 0)
            return r;
        snprintf(sub, sizeof sub, "%s.key", item);
        if ((r = get_string(values[0], sub, &e->key, err)) < 0)
            return r;
        snprintf(sub, sizeof sub, "%s.value", item);
        if ((r = get_bytes(values[1], sub, &e->value, err)) < 0)
            return r;
    }
    return 0;
}

static int files_from_json(const json_t *v, const char *prefix, obi_build_request *req,
                           obi_error **err)
{
    char field[96];
    snprintf(field, sizeof field, "%sadditional_files", prefix);
    int r;
    v = array_or_empty(v, field, err, &r);
    if (r < 0 || !v || json_array_size(v) == 0)
        return r;
    req->additional_files = calloc(json_array_size(v), sizeof *req->additional_files);
    if (!req->additional_files)
        return obi_error_oom(err);
    for (size_t i = 0; i < json_array_size(v); i++) {
        char item[128], sub[160];
        snprintf(item, sizeof item, "%s[%zu]", field, i);
        const json_t *values[2] = {NULL, NULL};
        obi_additional_file *f = &req->additional_files[req->n_additional_files++];
        if ((r = object_fields(json_array_get(v, i), item, FILE_FIELDS, 2, values, err)) < 0)
            return r;
        snprintf(sub, sizeof sub, "%s.path", item);
        if ((r = get_string(values[0], sub, &f->path, err)) < 0)
            return r;
        snprintf(sub, sizeof sub, "%s.contents", item);
        if ((r = get_bytes(values[1], sub, &f->contents, err)) < 0)
            return r;
    }
    return 0;
}

static int constraints_from_json(const json_t *v, const char *prefix, obi_build_request *req,
                                 obi_error **err)
{
    if (!v)
        return 0;
    char field[96], sub[128];
    snprintf(field, sizeof field, "%sconstraints", prefix);
    const json_t *values[OBI_ARRAY_SIZE(CONSTRAINT_FIELDS)] = {NULL};
    int r =
        object_fields(v, field, CONSTRAINT_FIELDS, OBI_ARRAY_SIZE(CONSTRAINT_FIELDS), values, err);
    if (r < 0)
        return r;
    obi_build_constraints *c = &req->constraints;
    req->has_constraints = true;
    snprintf(sub, sizeof sub, "%s.system", field);
    if ((r = get_string(values[C_SYSTEM], sub, &c->system, err)) < 0)
        return r;
    snprintf(sub, sizeof sub, "%s.min_memory", field);
    if ((r = get_uint64(values[C_MIN_MEMORY], sub, &c->min_memory, err)) < 0)
        return r;
    snprintf(sub, sizeof sub, "%s.available_ro_paths", field);
    if ((r = get_string_list(values[C_RO_PATHS], sub, &c->available_ro_paths,
                             &c->n_available_ro_paths, err)) < 0)
        return r;
    snprintf(sub, sizeof sub, "%s.network_access", field);
    if ((r = get_bool(values[C_NETWORK], sub, &c->network_access, err)) < 0)
        return r;
    snprintf(sub, sizeof sub, "%s.provide_bin_sh", field);
    if ((r = get_bool(values[C_BIN_SH], sub, &c->provide_bin_sh, err)) < 0)
        return r;
    snprintf(sub, sizeof sub, "%s.hide_sys", field);
    return get_bool(values[C_HIDE_SYS], sub, &c->hide_sys, err);
}

/* where names the message in errors; prefix is prepended to field names ("" at top level,
 * "build_request." inside a Build). */
static int request_from_json(const json_t *json, const char *where, const char *prefix,
                             obi_build_request **out, obi_error **err)
{
    const json_t *v[OBI_ARRAY_SIZE(REQUEST_FIELDS)];
    int r = object_fields(json, where, REQUEST_FIELDS, OBI_ARRAY_SIZE(REQUEST_FIELDS), v, err);
    if (r < 0)
        return r;
    cleanup_build_request obi_build_request *req = obi_build_request_new();
    if (!req)
        return obi_error_oom(err);
    char f[3][96];
    snprintf(f[0], sizeof f[0], "%scommand_args", prefix);
    snprintf(f[1], sizeof f[1], "%sscratch_paths", prefix);
    snprintf(f[2], sizeof f[2], "%soutputs", prefix);
    if ((r = inputs_from_json(v[F_INPUTS], prefix, req, err)) < 0 ||
        (r = get_string_list(v[F_COMMAND_ARGS], f[0], &req->command_args, &req->n_command_args,
                             err)) < 0 ||
        (r = get_string_list(v[F_SCRATCH_PATHS], f[1], &req->scratch_paths, &req->n_scratch_paths,
                             err)) < 0 ||
        (r = get_string_list(v[F_OUTPUTS], f[2], &req->outputs, &req->n_outputs, err)) < 0)
        return r;
    snprintf(f[0], sizeof f[0], "%sworking_dir", prefix);
    snprintf(f[1], sizeof f[1], "%sinputs_dir", prefix);
    snprintf(f[2], sizeof f[2], "%srefscan_needles", prefix);
    if ((r = get_string(v[F_WORKING_DIR], f[0], &req->working_dir, err)) < 0 ||
        (r = get_string(v[F_INPUTS_DIR], f[1], &req->inputs_dir, err)) < 0 ||
        (r = get_string_list(v[F_REFSCAN_NEEDLES], f[2], &req->refscan_needles,
                             &req->n_refscan_needles, err)) < 0 ||
        (r = env_from_json(v[F_ENVIRONMENT_VARS], prefix, req, err)) < 0 ||
        (r = files_from_json(v[F_ADDITIONAL_FILES], prefix, req, err)) < 0 ||
        (r = constraints_from_json(v[F_CONSTRAINTS], prefix, req, err)) < 0)
        return r;
    *out = steal_pointer(&req);
    return 0;
}

int obi_build_request_from_json(const json_t *json, obi_build_request **out, obi_error **err)
{
    return request_from_json(json, "BuildRequest", "", out, err);
}

/* ---- BuildRequest to JSON ---- */

static json_t *string_list_to_json(char *const *list, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_string(list[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *bytes_to_json(const obi_bytes *b)
{
    cleanup_free char *text = malloc(obi_base64_encoded_len(b->len) + 1);
    if (!text)
        return NULL;
    obi_base64_encode(b->data, b->len, text);
    return json_string(text);
}

static json_t *nodes_to_json(const obi_node *nodes, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, obi_node_to_json(&nodes[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *uint64_to_json(uint64_t v)
{
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)v);
    return json_string(text);
}

/* Sets key unless value is the default (empty string/array, false, 0 given as NULL). */
static int set_field(json_t *obj, const char *key, json_t *value)
{
    if (!value)
        return -ENOMEM;
    bool empty = (json_is_array(value) && json_array_size(value) == 0) ||
                 (json_is_string(value) && json_string_length(value) == 0) || json_is_false(value);
    if (empty) {
        json_decref(value);
        return 0;
    }
    return json_object_set_new(obj, key, value) < 0 ? -ENOMEM : 0;
}

static json_t *constraints_to_json(const obi_build_constraints *c)
{
    cleanup_json json_t *o = json_object();
    if (!o)
        return NULL;
    if (set_field(o, "system", json_string(c->system ? c->system : "")) < 0 ||
        (c->min_memory && set_field(o, "minMemory", uint64_to_json(c->min_memory)) < 0) ||
        set_field(o, "availableRoPaths",
                  string_list_to_json(c->available_ro_paths, c->n_available_ro_paths)) < 0 ||
        set_field(o, "networkAccess", json_boolean(c->network_access)) < 0 ||
        set_field(o, "provideBinSh", json_boolean(c->provide_bin_sh)) < 0 ||
        set_field(o, "hideSys", json_boolean(c->hide_sys)) < 0)
        return NULL;
    return steal_pointer(&o);
}

static json_t *env_to_json(const obi_build_request *req)
{
    cleanup_json json_t *a = json_array();
    for (size_t i = 0; a && i < req->n_environment_vars; i++) {
        json_t *e = json_object();
        if (json_array_append_new(a, e) < 0 ||
            set_field(e, "key", json_string(req->environment_vars[i].key)) < 0 ||
            set_field(e, "value", bytes_to_json(&req->environment_vars[i].value)) < 0)
            return NULL;
    }
    return steal_pointer(&a);
}

static json_t *files_to_json(const obi_build_request *req)
{
    cleanup_json json_t *a = json_array();
    for (size_t i = 0; a && i < req->n_additional_files; i++) {
        json_t *f = json_object();
        if (json_array_append_new(a, f) < 0 ||
            set_field(f, "path", json_string(req->additional_files[i].path)) < 0 ||
            set_field(f, "contents", bytes_to_json(&req->additional_files[i].contents)) < 0)
            return NULL;
    }
    return steal_pointer(&a);
}

json_t *obi_build_request_to_json(const obi_build_request *req)
{
    cleanup_json json_t *o = json_object();
    if (!o)
        return NULL;
    if (set_field(o, "inputs", nodes_to_json(req->inputs, req->n_inputs)) < 0 ||
        set_field(o, "commandArgs", string_list_to_json(req->command_args, req->n_command_args)) <
            0 ||
        set_field(o, "workingDir", json_string(req->working_dir ? req->working_dir : "")) < 0 ||
        set_field(o, "scratchPaths",
                  string_list_to_json(req->scratch_paths, req->n_scratch_paths)) < 0 ||
        set_field(o, "inputsDir", json_string(req->inputs_dir ? req->inputs_dir : "")) < 0 ||
        set_field(o, "outputs", string_list_to_json(req->outputs, req->n_outputs)) < 0 ||
        set_field(o, "environmentVars", env_to_json(req)) < 0 ||
        (req->has_constraints &&
         json_object_set_new(o, "constraints", constraints_to_json(&req->constraints)) < 0) ||
        set_field(o, "additionalFiles", files_to_json(req)) < 0 ||
        set_field(o, "refscanNeedles",
                  string_list_to_json(req->refscan_needles, req->n_refscan_needles)) < 0)
        return NULL;
    return steal_pointer(&o);
}

/* ---- Build ---- */

static const json_field BUILD_FIELDS[] = {
    {"build_request", "buildRequest"},
    {"outputs", "outputs"},
    {"outputs_needles", "outputsNeedles"},
};
static const json_field NEEDLES_FIELDS[] = {{"needles", "needles"}};

json_t *obi_build_to_json(const obi_build *build)
{
    cleanup_json json_t *o = json_object();
    if (!o)
        return NULL;
    if (build->request &&
        json_object_set_new(o, "buildRequest", obi_build_request_to_json(build->request)) < 0)
        return NULL;
    if (set_field(o, "outputs", nodes_to_json(build->outputs, build->n_outputs)) < 0)
        return NULL;
    cleanup_json json_t *all = json_array();
    for (size_t i = 0; all && build->outputs_needles && i < build->n_outputs; i++) {
        json_t *entry = json_object();
        json_t *list = json_array();
        for (size_t k = 0; list && k < build->outputs_needles[i].n_needles; k++)
            if (json_array_append_new(list, uint64_to_json(build->outputs_needles[i].needles[k])) <
                0) {
                json_decref(list);
                list = NULL;
            }
        if (json_array_append_new(all, entry) < 0 || set_field(entry, "needles", list) < 0)
            return NULL;
    }
    if (set_field(o, "outputsNeedles", steal_pointer(&all)) < 0)
        return NULL;
    return steal_pointer(&o);
}

static int needles_from_json(const json_t *v, obi_build *build, obi_error **err)
{
    int r;
    v = array_or_empty(v, "outputs_needles", err, &r);
    if (r < 0)
        return r;
    size_t n = v ? json_array_size(v) : 0;
    if (n != 0 && n != build->n_outputs)
        return obi_error_set(err, -EINVAL, "outputs_needles: %zu entries for %zu outputs", n,
                             build->n_outputs);
    if (build->n_outputs) {
        build->outputs_needles = calloc(build->n_outputs, sizeof *build->outputs_needles);
        if (!build->outputs_needles)
            return obi_error_oom(err);
    }
    for (size_t i = 0; i < n; i++) {
        char item[64], sub[96];
        snprintf(item, sizeof item, "outputs_needles[%zu]", i);
        const json_t *values[1] = {NULL};
        if ((r = object_fields(json_array_get(v, i), item, NEEDLES_FIELDS, 1, values, err)) < 0)
            return r;
        snprintf(sub, sizeof sub, "%s.needles", item);
        const json_t *list = array_or_empty(values[0], sub, err, &r);
        if (r < 0)
            return r;
        if (!list || json_array_size(list) == 0)
            continue;
        obi_output_needles *d = &build->outputs_needles[i];
        d->needles = calloc(json_array_size(list), sizeof *d->needles);
        if (!d->needles)
            return obi_error_oom(err);
        for (size_t k = 0; k < json_array_size(list); k++) {
            char elem[128];
            snprintf(elem, sizeof elem, "%s[%zu]", sub, k);
            if ((r = get_uint64(json_array_get(list, k), elem, &d->needles[k], err)) < 0)
                return r;
            d->n_needles++;
        }
    }
    return r;
}

int obi_build_from_json(const json_t *json, obi_build **out, obi_error **err)
{
    const json_t *v[OBI_ARRAY_SIZE(BUILD_FIELDS)];
    int r = object_fields(json, "Build", BUILD_FIELDS, OBI_ARRAY_SIZE(BUILD_FIELDS), v, err);
    if (r < 0)
        return r;
    cleanup_build obi_build *build = obi_build_new();
    if (!build)
        return obi_error_oom(err);
    if (v[0] &&
        (r = request_from_json(v[0], "build_request", "build_request.", &build->request, err)) < 0)
        return r;
    const json_t *outputs = array_or_empty(v[1], "outputs", err, &r);
    if (r < 0)
        return r;
    if (outputs && json_array_size(outputs)) {
        build->outputs = calloc(json_array_size(outputs), sizeof *build->outputs);
        if (!build->outputs)
            return obi_error_oom(err);
        for (size_t i = 0; i < json_array_size(outputs); i++) {
            if ((r = obi_node_from_json(json_array_get(outputs, i), &build->outputs[i], err)) < 0)
                return obi_error_prefix(err, r, "outputs[%zu]", i);
            build->n_outputs++;
        }
    }
    if ((r = needles_from_json(v[2], build, err)) < 0)
        return r;
    *out = steal_pointer(&build);
    return 0;
}
