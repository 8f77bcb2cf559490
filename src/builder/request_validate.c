/*
 * BuildRequest validation: every rule of build.md's Validation section, checked on the model
 * before anything touches the disk. Each error names the field and index, e.g.
 * `outputs[1]: "out/../x" is not a clean path`. The scratch-path lookup used by the rules is
 * public, because the bundle code places outputs and additional files with it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/request.h"

/* Quotes s for an error message: printable ASCII as is, the rest as \xNN. Caller frees. */
static char *quote(const char *s, size_t len)
{
    obi_buf buf = OBI_BUF_INIT;
    int r = obi_buf_append_str(&buf, "\"");
    for (size_t i = 0; r == 0 && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            r = obi_buf_appendf(&buf, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            r = obi_buf_appendf(&buf, "\\x%02x", c);
        else
            r = obi_buf_append(&buf, &s[i], 1);
    }
    if (r == 0)
        r = obi_buf_append_str(&buf, "\"");
    if (r < 0) {
        obi_buf_free(&buf);
        return NULL;
    }
    return obi_buf_steal(&buf);
}

bool obi_path_is_clean_relative(const char *path)
{
    if (!path || !*path)
        return false;
    const char *p = path;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0)
            return false; /* leading '/', "//" or trailing '/' */
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (!slash)
            return true;
        p = slash + 1;
    }
}

/* Checks a relative path field; allow_empty for working_dir and inputs_dir (the root). */
static int check_relative(const char *field, const char *path, bool allow_empty, obi_error **err)
{
    if (allow_empty && !*path)
        return 0;
    if (obi_path_is_clean_relative(path))
        return 0;
    cleanup_free char *q = quote(path, strlen(path));
    if (!*path)
        return obi_error_set(err, -EINVAL, "%s: must not be empty", field);
    if (path[0] == '/')
        return obi_error_set(err, -EINVAL, "%s: %s is not relative", field, q ? q : "");
    return obi_error_set(err, -EINVAL, "%s: %s is not a clean path", field, q ? q : "");
}

/* Checks that cur sorts strictly after prev (bytewise). */
static int check_ascending(const char *field, const char *what, const char *prev, const char *cur,
                           obi_error **err)
{
    int c = strcmp(prev, cur);
    if (c < 0)
        return 0;
    cleanup_free char *qp = quote(prev, strlen(prev));
    cleanup_free char *qc = quote(cur, strlen(cur));
    if (c == 0)
        return obi_error_set(err, -EINVAL, "%s: duplicate %s%s", field, what, qc ? qc : "");
    return obi_error_set(err, -EINVAL,
                         "%s: %s%s sorts before the previous %s%s (must be ascending)", field, what,
                         qc ? qc : "", what, qp ? qp : "");
}

/* Does scratch (clean, relative) contain path (clean, relative), by whole components? */
static bool scratch_contains(const char *scratch, const char *path, const char **rest)
{
    size_t n = strlen(scratch);
    if (strncmp(scratch, path, n) != 0)
        return false;
    if (path[n] == '\0') {
        *rest = path + n;
        return true;
    }
    if (path[n] != '/')
        return false;
    *rest = path + n + 1;
    return true;
}

int obi_build_request_find_scratch(const obi_build_request *req, const char *path,
                                   size_t *scratch_index, const char **rest)
{
    size_t best = 0, best_len = 0;
    const char *best_rest = NULL;
    for (size_t i = 0; i < req->n_scratch_paths; i++) {
        const char *r = NULL;
        size_t len = strlen(req->scratch_paths[i]);
        if (scratch_contains(req->scratch_paths[i], path, &r) && (!best_rest || len > best_len)) {
            best = i;
            best_len = len;
            best_rest = r;
        }
    }
    if (!best_rest)
        return -ENOENT;
    if (scratch_index)
        *scratch_index = best;
    if (rest)
        *rest = best_rest;
    return 0;
}

/* A sorted list of clean relative paths, e.g. scratch_paths or outputs. */
static int check_path_list(const char *name, char *const *paths, size_t n, obi_error **err)
{
    char field[64];
    for (size_t i = 0; i < n; i++) {
        snprintf(field, sizeof field, "%s[%zu]", name, i);
        int r = check_relative(field, paths[i], false, err);
        if (r < 0)
            return r;
        if (i > 0 && (r = check_ascending(field, "", paths[i - 1], paths[i], err)) < 0)
            return r;
    }
    return 0;
}

static int check_outputs(const obi_build_request *req, obi_error **err)
{
    int r = check_path_list("outputs", req->outputs, req->n_outputs, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < req->n_outputs; i++) {
        if (obi_build_request_find_scratch(req, req->outputs[i], NULL, NULL) == 0)
            continue;
        cleanup_free char *q = quote(req->outputs[i], strlen(req->outputs[i]));
        return obi_error_set(err, -EINVAL, "outputs[%zu]: %s is not inside any scratch path", i,
                             q ? q : "");
    }
    return 0;
}

static int check_additional_files(const obi_build_request *req, obi_error **err)
{
    char field[64];
    for (size_t i = 0; i < req->n_additional_files; i++) {
        const char *path = req->additional_files[i].path;
        snprintf(field, sizeof field, "additional_files[%zu].path", i);
        int r = check_relative(field, path, false, err);
        if (r < 0)
            return r;
        if (i > 0 &&
            (r = check_ascending(field, "", req->additional_files[i - 1].path, path, err)) < 0)
            return r;
        const char *rest = NULL;
        if (obi_build_request_find_scratch(req, path, NULL, &rest) < 0 || !*rest) {
            cleanup_free char *q = quote(path, strlen(path));
            return obi_error_set(err, -EINVAL, "%s: %s is not inside any scratch path", field,
                                 q ? q : "");
        }
    }
    return 0;
}

static int check_environment(const obi_build_request *req, obi_error **err)
{
    for (size_t i = 0; i < req->n_environment_vars; i++) {
        const obi_env_var *e = &req->environment_vars[i];
        if (!*e->key)
            return obi_error_set(err, -EINVAL, "environment_vars[%zu]: key is empty", i);
        if (strchr(e->key, '=')) {
            cleanup_free char *q = quote(e->key, strlen(e->key));
            return obi_error_set(err, -EINVAL, "environment_vars[%zu]: key %s contains '='", i,
                                 q ? q : "");
        }
        if (e->value.len && memchr(e->value.data, '\0', e->value.len)) {
            cleanup_free char *q = quote(e->key, strlen(e->key));
            return obi_error_set(err, -EINVAL, "environment_vars[%zu]: value of %s contains NUL", i,
                                 q ? q : "");
        }
        if (i > 0) {
            char field[64];
            snprintf(field, sizeof field, "environment_vars[%zu]", i);
            int r = check_ascending(field, "key ", req->environment_vars[i - 1].key, e->key, err);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

static int check_constraints(const obi_build_request *req, obi_error **err)
{
    const obi_build_constraints *c = &req->constraints;
    if (!req->has_constraints)
        return 0;
    if (!c->system || !*c->system)
        return obi_error_set(err, -EINVAL,
                             "constraints.system: must not be empty when constraints are set");
    char field[80];
    for (size_t i = 0; i < c->n_available_ro_paths; i++) {
        const char *p = c->available_ro_paths[i];
        snprintf(field, sizeof field, "constraints.available_ro_paths[%zu]", i);
        cleanup_free char *q = quote(p, strlen(p));
        if (p[0] != '/')
            return obi_error_set(err, -EINVAL, "%s: %s is not absolute", field, q ? q : "");
        if (!obi_path_is_clean_relative(p + 1))
            return obi_error_set(err, -EINVAL, "%s: %s is not a clean path", field, q ? q : "");
        int r;
        if (i > 0 && (r = check_ascending(field, "", c->available_ro_paths[i - 1], p, err)) < 0)
            return r;
    }
    return 0;
}

static int name_compare(const obi_bytes *a, const obi_bytes *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->data, b->data, n) : 0;
    if (c)
        return c;
    return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
}

static int check_inputs(const obi_build_request *req, obi_error **err)
{
    for (size_t i = 0; i < req->n_inputs; i++) {
        const obi_node *node = &req->inputs[i];
        int r = obi_node_validate(node, err);
        if (r < 0)
            return obi_error_prefix(err, r, "inputs[%zu]", i);
        if (i == 0)
            continue;
        int c = name_compare(&req->inputs[i - 1].name, &node->name);
        if (c < 0)
            continue;
        cleanup_free char *q = quote((const char *)node->name.data, node->name.len);
        if (c == 0)
            return obi_error_set(err, -EINVAL, "inputs[%zu]: duplicate name %s", i, q ? q : "");
        return obi_error_set(err, -EINVAL,
                             "inputs[%zu]: name %s sorts before the previous input's name (must "
                             "be strictly ascending)",
                             i, q ? q : "");
    }
    return 0;
}

int obi_build_request_validate(const obi_build_request *req, obi_error **err)
{
    int r;
    if (req->n_command_args == 0)
        return obi_error_set(err, -EINVAL, "command_args: must not be empty");
    if ((r = check_relative("working_dir", req->working_dir, true, err)) < 0 ||
        (r = check_relative("inputs_dir", req->inputs_dir, true, err)) < 0 ||
        (r = check_path_list("scratch_paths", req->scratch_paths, req->n_scratch_paths, err)) < 0 ||
        (r = check_outputs(req, err)) < 0 || (r = check_additional_files(req, err)) < 0 ||
        (r = check_environment(req, err)) < 0 || (r = check_constraints(req, err)) < 0 ||
        (r = check_inputs(req, err)) < 0)
        return r;
    return 0;
}
