/*
 * Nix .drv files (see include/ocibuild/derivation.h): a recursive-descent parser over the ATerm
 * text that Nix writes (no whitespace, fixed shape), and the matching serializer. The parser
 * keeps a byte offset so every error says where it stopped; derivation_request.c turns the
 * result into a BuildRequest and the tests use the serializer for round trips.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/array.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/derivation.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/nix_store_path.h"

#define DRV_MAX_FILE_SIZE (64u * 1024 * 1024)

/* ---- parser state and errors ---- */

typedef struct parser {
    const char *text;
    size_t len;
    size_t pos;
    obi_error **err;
} parser;

__attribute__((format(printf, 3, 4))) static int parse_fail(parser *ps, size_t offset,
                                                            const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return obi_error_set(ps->err, -EINVAL, "drv: offset %zu: %s", offset, message);
}

/* Describes the byte at the current position for "got ..." messages. */
static void describe_current(const parser *ps, char out[16])
{
    if (ps->pos >= ps->len) {
        snprintf(out, 16, "end of input");
        return;
    }
    unsigned char c = (unsigned char)ps->text[ps->pos];
    if (c >= 0x20 && c < 0x7f)
        snprintf(out, 16, "'%c'", c);
    else
        snprintf(out, 16, "'\\x%02x'", c);
}

static int expect_char(parser *ps, char c)
{
    if (ps->pos < ps->len && ps->text[ps->pos] == c) {
        ps->pos++;
        return 0;
    }
    char got[16];
    describe_current(ps, got);
    return parse_fail(ps, ps->pos, "expected '%c' got %s", c, got);
}

static int expect_literal(parser *ps, const char *literal)
{
    for (const char *l = literal; *l; l++) {
        int r = expect_char(ps, *l);
        if (r < 0)
            return r;
    }
    return 0;
}

static bool peek_char(const parser *ps, char c)
{
    return ps->pos < ps->len && ps->text[ps->pos] == c;
}

/* A quoted string with \" \\ \n \r \t escapes. *start_out = offset of the opening quote. */
static int parse_string(parser *ps, char **out, size_t *start_out)
{
    size_t start = ps->pos;
    int r = expect_char(ps, '"');
    if (r < 0)
        return r;
    cleanup_buf obi_buf value = OBI_BUF_INIT;
    if (obi_buf_reserve(&value, 0) < 0)
        return obi_error_set(ps->err, -ENOMEM, "drv: out of memory");
    for (;;) {
        if (ps->pos >= ps->len)
            return parse_fail(ps, ps->pos, "unterminated string starting at offset %zu", start);
        char c = ps->text[ps->pos];
        if (c == '"') {
            ps->pos++;
            break;
        }
        if (c == '\0')
            return parse_fail(ps, ps->pos, "NUL byte in string");
        if (c == '\\') {
            if (ps->pos + 1 >= ps->len)
                return parse_fail(ps, ps->pos + 1, "unterminated string starting at offset %zu",
                                  start);
            char e = ps->text[ps->pos + 1];
            switch (e) {
            case '"':
            case '\\':
                c = e;
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            default: {
                ps->pos++;
                char got[16];
                describe_current(ps, got);
                return parse_fail(ps, ps->pos, "invalid escape: expected one of \" \\ n r t got %s",
                                  got);
            }
            }
            ps->pos += 2;
        } else {
            ps->pos++;
        }
        if (obi_buf_append(&value, &c, 1) < 0)
            return obi_error_set(ps->err, -ENOMEM, "drv: out of memory");
    }
    if (start_out)
        *start_out = start;
    *out = obi_buf_steal(&value);
    return 0;
}

/* After a list element: ',' continues (returns 1), ']' ends (returns 0). */
static int list_next(parser *ps)
{
    if (peek_char(ps, ',')) {
        ps->pos++;
        return 1;
    }
    if (peek_char(ps, ']')) {
        ps->pos++;
        return 0;
    }
    char got[16];
    describe_current(ps, got);
    return parse_fail(ps, ps->pos, "expected ',' or ']' got %s", got);
}

/* '[' then, unless the list is empty, element (list_next element)*. Calls parse_element for
 * each element. */
typedef int (*element_fn)(parser *ps, void *ctx);
static int parse_list(parser *ps, element_fn parse_element, void *ctx)
{
    int r = expect_char(ps, '[');
    if (r < 0)
        return r;
    if (peek_char(ps, ']')) {
        ps->pos++;
        return 0;
    }
    do {
        r = parse_element(ps, ctx);
        if (r < 0)
            return r;
        r = list_next(ps);
        if (r < 0)
            return r;
    } while (r == 1);
    return 0;
}

/* ---- string lists ---- */

typedef struct string_list {
    char ***items;
    size_t *n;
    size_t cap;
} string_list;

static int parse_string_element(parser *ps, void *ctx)
{
    string_list *list = ctx;
    if (obi_array_grow(list->items, &list->cap, *list->n + 1) < 0)
        return obi_error_set(ps->err, -ENOMEM, "drv: out of memory");
    int r = parse_string(ps, &(*list->items)[*list->n], NULL);
    if (r < 0)
        return r;
    (*list->n)++;
    return 0;
}

static int parse_string_list(parser *ps, char ***items, size_t *n)
{
    string_list list = {items, n, 0};
    return parse_list(ps, parse_string_element, &list);
}

/* ---- input sources: store paths ---- */

static int check_store_path(parser *ps, const char *path, size_t at, const char *what);

static int parse_source_element(parser *ps, void *ctx)
{
    string_list *list = ctx;
    if (obi_array_grow(list->items, &list->cap, *list->n + 1) < 0)
        return obi_error_set(ps->err, -ENOMEM, "drv: out of memory");
    size_t at = 0;
    int r = parse_string(ps, &(*list->items)[*list->n], &at);
    if (r < 0)
        return r;
    (*list->n)++;
    return check_store_path(ps, (*list->items)[*list->n - 1], at, "input source");
}

static int parse_source_list(parser *ps, char ***items, size_t *n)
{
    string_list list = {items, n, 0};
    return parse_list(ps, parse_source_element, &list);
}

/* ---- hash algorithms ---- */

static const struct {
    const char *name;
    size_t digest_len;
} HASH_ALGOS[] = {
    {"md5", 16},
    {"sha1", 20},
    {"sha256", 32},
    {"sha512", 64},
};

int obi_derivation_hash_algo_parse(const char *hash_algo, bool *recursive, const char **algo,
                                   size_t *digest_len, obi_error **err)
{
    bool rec = strncmp(hash_algo, "r:", 2) == 0;
    const char *name = rec ? hash_algo + 2 : hash_algo;
    for (size_t i = 0; i < OBI_ARRAY_SIZE(HASH_ALGOS); i++) {
        if (strcmp(name, HASH_ALGOS[i].name) == 0) {
            if (recursive)
                *recursive = rec;
            if (algo)
                *algo = HASH_ALGOS[i].name;
            if (digest_len)
                *digest_len = HASH_ALGOS[i].digest_len;
            return 0;
        }
    }
    return obi_error_set(err, -EINVAL,
                         "unknown hash algorithm '%s' (expected [r:]md5, sha1, sha256 or sha512)",
                         hash_algo);
}

static bool is_lower_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[len] == '\0';
}

/* ---- outputs: ("name","path","hashAlgo","hash") ---- */

typedef struct outputs_ctx {
    obi_derivation *drv;
    size_t cap;
} outputs_ctx;

/* A store path, as Nix's parser requires of input derivations and sources and of the paths of
 * input-addressed outputs ("what" names the field in the message). */
static int check_store_path(parser *ps, const char *path, size_t at, const char *what)
{
    const char *base;
    cleanup_error obi_error *path_err = NULL;
    if (obi_nix_store_path_parse(path, &base, &path_err) < 0)
        return parse_fail(ps, at, "%s: %s", what, path_err->message);
    return 0;
}

/* The path of an output, by its kind: input-addressed ones have a store path (or none: deferred,
 * its inputs are content-addressed), fixed-output ones an absolute path (the real one is
 * computed from the hash), floating content-addressed ones none. */
static int check_output_path(parser *ps, const obi_derivation_output *o, size_t path_at)
{
    char what[300];
    snprintf(what, sizeof what, "output '%s'", o->name);
    if (!*o->hash_algo)
        return *o->path ? check_store_path(ps, o->path, path_at, what) : 0;
    if (*o->hash) {
        if (o->path[0] != '/')
            return parse_fail(ps, path_at, "%s: bad path '%s' in derivation", what, o->path);
        return 0;
    }
    if (*o->path)
        return parse_fail(ps, path_at,
                          "%s: a floating content-addressed output has no path (got '%s')", what,
                          o->path);
    return 0;
}

static int check_output(parser *ps, const obi_derivation *drv, const obi_derivation_output *o,
                        size_t name_at, size_t path_at, size_t algo_at, size_t hash_at)
{
    if (!*o->name)
        return parse_fail(ps, name_at, "empty output name");
    for (size_t i = 0; i < drv->n_outputs; i++)
        if (strcmp(drv->outputs[i].name, o->name) == 0)
            return parse_fail(ps, name_at, "duplicate output '%s'", o->name);
    size_t digest_len = 0;
    if (*o->hash_algo) {
        cleanup_error obi_error *algo_err = NULL;
        if (obi_derivation_hash_algo_parse(o->hash_algo, NULL, NULL, &digest_len, &algo_err) < 0)
            return parse_fail(ps, algo_at, "output '%s': %s", o->name, algo_err->message);
    }
    if (*o->hash) {
        if (!*o->hash_algo)
            return parse_fail(ps, hash_at, "output '%s': hash without a hash algorithm", o->name);
        if (strcmp(o->hash, "impure") == 0)
            return parse_fail(ps, hash_at,
                              "output '%s': impure derivations (experimental in Nix) are not "
                              "supported",
                              o->name);
        if (strlen(o->hash) != 2 * digest_len || !is_lower_hex(o->hash, 2 * digest_len))
            return parse_fail(ps, hash_at,
                              "output '%s': hash must be %zu lowercase hex digits for %s", o->name,
                              2 * digest_len, o->hash_algo);
    }
    return check_output_path(ps, o, path_at);
}

static int parse_output_element(parser *ps, void *ctx)
{
    outputs_ctx *c = ctx;
    obi_derivation *drv = c->drv;
    if (obi_array_grow(&drv->outputs, &c->cap, drv->n_outputs + 1) < 0)
        return obi_error_set(ps->err, -ENOMEM, "drv: out of memory");
    obi_derivation_output *o = &drv->outputs[drv->n_outputs];
    size_t name_at = 0, path_at = 0, algo_at = 0, hash_at = 0;
    int r = expect_char(ps, '(');
    if (r >= 0)
        r = parse_string(ps, &o->name, &name_at);
    if (r >= 0)
        r = expect_char(ps, ',');
    if (r >= 0)
        r = parse_string(ps, &o->path, &path_at);
    if (r >= 0)
        r = expect_char(ps, ',');
    if (r >= 0)
        r = parse_string(ps, &o->hash_algo, &algo_at);
    if (r >= 0)
        r = expect_char(ps, ',');
    if (r >= 0)
        r = parse_string(ps, &o->hash, &hash_at);
    if (r >= 0)
        r = expect_char(ps, ')');
    if (r >= 0)
        r = check_output(ps, drv, o, name_at, path_at, algo_at, hash_at);
    drv->n_outputs++; /* counted even when incomplete, so obi_derivation_free releases it */
    return r;
}

/* ---- input derivations: ("drvpath",["out",...]) ---- */

typedef struct inputs_ctx {
    obi_derivation *drv;
    size_t cap;
} inputs_ctx;

static int parse_input_element(parser *ps, void *ctx)
{
    inputs_ctx *c = ctx;
    obi_derivation *drv = c->drv;
    if (obi_array_grow(&drv->input_drvs, &c->cap, drv->n_input_drvs + 1) < 0)
        return obi_error_set(ps->err, -ENOMEM, "drv: out of memory");
    obi_derivation_input *in = &drv->input_drvs[drv->n_input_drvs++];
    size_t path_at = 0;
    int r = expect_char(ps, '(');
    if (r >= 0)
        r = parse_string(ps, &in->drv_path, &path_at);
    if (r >= 0)
        r = check_store_path(ps, in->drv_path, path_at, "input derivation");
    if (r >= 0)
        r = expect_char(ps, ',');
    if (r >= 0)
        r = parse_string_list(ps, &in->outputs, &in->n_outputs);
    if (r >= 0)
        r = expect_char(ps, ')');
    return r;
}

/* ---- environment: ("key","value") ---- */

typedef struct env_ctx {
    obi_derivation *drv;
    size_t cap;
} env_ctx;

static int parse_env_element(parser *ps, void *ctx)
{
    env_ctx *c = ctx;
    obi_derivation *drv = c->drv;
    if (obi_array_grow(&drv->env, &c->cap, drv->n_env + 1) < 0)
        return obi_error_set(ps->err, -ENOMEM, "drv: out of memory");
    obi_derivation_env *e = &drv->env[drv->n_env];
    size_t key_at;
    int r = expect_char(ps, '(');
    if (r >= 0)
        r = parse_string(ps, &e->key, &key_at);
    if (r >= 0)
        r = expect_char(ps, ',');
    if (r >= 0)
        r = parse_string(ps, &e->value, NULL);
    if (r >= 0)
        r = expect_char(ps, ')');
    if (r >= 0)
        for (size_t i = 0; i < drv->n_env; i++)
            if (strcmp(drv->env[i].key, e->key) == 0) {
                r = parse_fail(ps, key_at, "duplicate environment variable '%s'", e->key);
                break;
            }
    drv->n_env++;
    return r;
}

/* ---- the whole derivation ---- */

int obi_derivation_parse(const char *text, size_t len, obi_derivation **out, obi_error **err)
{
    parser ps = {text, len, 0, err};
    obi_derivation *drv = calloc(1, sizeof *drv);
    if (!drv)
        return obi_error_set(err, -ENOMEM, "drv: out of memory");
    _cleanup_(obi_derivation_freep) obi_derivation *owned = drv;
    outputs_ctx outputs = {drv, 0};
    inputs_ctx inputs = {drv, 0};
    env_ctx env = {drv, 0};

    int r = expect_literal(&ps, "Derive(");
    if (r >= 0)
        r = parse_list(&ps, parse_output_element, &outputs);
    if (r >= 0)
        r = expect_char(&ps, ',');
    if (r >= 0)
        r = parse_list(&ps, parse_input_element, &inputs);
    if (r >= 0)
        r = expect_char(&ps, ',');
    if (r >= 0)
        r = parse_source_list(&ps, &drv->input_srcs, &drv->n_input_srcs);
    if (r >= 0)
        r = expect_char(&ps, ',');
    if (r >= 0)
        r = parse_string(&ps, &drv->system, NULL);
    if (r >= 0)
        r = expect_char(&ps, ',');
    if (r >= 0)
        r = parse_string(&ps, &drv->builder, NULL);
    if (r >= 0)
        r = expect_char(&ps, ',');
    if (r >= 0)
        r = parse_string_list(&ps, &drv->args, &drv->n_args);
    if (r >= 0)
        r = expect_char(&ps, ',');
    if (r >= 0)
        r = parse_list(&ps, parse_env_element, &env);
    if (r >= 0)
        r = expect_char(&ps, ')');
    if (r < 0)
        return r;
    if (ps.pos != ps.len)
        return parse_fail(&ps, ps.pos, "trailing data after the derivation");
    if (drv->n_outputs == 0)
        return parse_fail(&ps, strlen("Derive("), "a derivation needs at least one output");
    *out = steal_pointer(&owned);
    return 0;
}

int obi_derivation_read_file(const char *path, obi_derivation **out, obi_error **err)
{
    cleanup_free char *text = NULL;
    size_t len = 0;
    int r = obi_read_file(path, DRV_MAX_FILE_SIZE, &text, &len, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    cleanup_derivation obi_derivation *drv = NULL;
    r = obi_derivation_parse(text, len, &drv, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    /* obi_derivation_parse sets drv whenever it returns 0 */
    // NOLINTNEXTLINE(clang-analyzer-core.NullDereference)
    if (!(drv->name = obi_derivation_name_from_path(path)))
        return obi_error_oom(err);
    *out = steal_pointer(&drv);
    return 0;
}

char *obi_derivation_name_from_path(const char *drv_path)
{
    const char *base = strrchr(drv_path, '/');
    base = base ? base + 1 : drv_path;
    size_t len = strlen(base);
    if (len > OBI_NIX_HASH_PART_LEN + 1 && base[OBI_NIX_HASH_PART_LEN] == '-') {
        base += OBI_NIX_HASH_PART_LEN + 1;
        len -= OBI_NIX_HASH_PART_LEN + 1;
    }
    if (len > 4 && strcmp(base + len - 4, ".drv") == 0)
        len -= 4;
    return strndup(base, len);
}

static void free_strings(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

void obi_derivation_free(obi_derivation *drv)
{
    if (!drv)
        return;
    for (size_t i = 0; i < drv->n_outputs; i++) {
        free(drv->outputs[i].name);
        free(drv->outputs[i].path);
        free(drv->outputs[i].hash_algo);
        free(drv->outputs[i].hash);
    }
    free(drv->outputs);
    for (size_t i = 0; i < drv->n_input_drvs; i++) {
        free(drv->input_drvs[i].drv_path);
        free_strings(drv->input_drvs[i].outputs, drv->input_drvs[i].n_outputs);
    }
    free(drv->input_drvs);
    free_strings(drv->input_srcs, drv->n_input_srcs);
    free(drv->system);
    free(drv->builder);
    free_strings(drv->args, drv->n_args);
    for (size_t i = 0; i < drv->n_env; i++) {
        free(drv->env[i].key);
        free(drv->env[i].value);
    }
    free(drv->env);
    free(drv->name);
    free(drv);
}

/* ---- serializer ---- */

static int write_string(obi_buf *buf, const char *s)
{
    int r = obi_buf_append(buf, "\"", 1);
    for (const char *p = s; *p && r >= 0; p++) {
        switch (*p) {
        case '"':
            r = obi_buf_append(buf, "\\\"", 2);
            break;
        case '\\':
            r = obi_buf_append(buf, "\\\\", 2);
            break;
        case '\n':
            r = obi_buf_append(buf, "\\n", 2);
            break;
        case '\r':
            r = obi_buf_append(buf, "\\r", 2);
            break;
        case '\t':
            r = obi_buf_append(buf, "\\t", 2);
            break;
        default:
            r = obi_buf_append(buf, p, 1);
        }
    }
    if (r >= 0)
        r = obi_buf_append(buf, "\"", 1);
    return r;
}

static int write_string_list(obi_buf *buf, char *const *items, size_t n)
{
    int r = obi_buf_append(buf, "[", 1);
    for (size_t i = 0; i < n && r >= 0; i++) {
        if (i > 0)
            r = obi_buf_append(buf, ",", 1);
        if (r >= 0)
            r = write_string(buf, items[i]);
    }
    if (r >= 0)
        r = obi_buf_append(buf, "]", 1);
    return r;
}

static int write_derivation(obi_buf *buf, const obi_derivation *drv)
{
    int r = obi_buf_append_str(buf, "Derive([");
    for (size_t i = 0; i < drv->n_outputs && r >= 0; i++) {
        const obi_derivation_output *o = &drv->outputs[i];
        r = obi_buf_append_str(buf, i > 0 ? ",(" : "(");
        const char *fields[] = {o->name, o->path, o->hash_algo, o->hash};
        for (size_t f = 0; f < OBI_ARRAY_SIZE(fields) && r >= 0; f++) {
            if (f > 0)
                r = obi_buf_append(buf, ",", 1);
            if (r >= 0)
                r = write_string(buf, fields[f]);
        }
        if (r >= 0)
            r = obi_buf_append(buf, ")", 1);
    }
    if (r >= 0)
        r = obi_buf_append_str(buf, "],[");
    for (size_t i = 0; i < drv->n_input_drvs && r >= 0; i++) {
        const obi_derivation_input *in = &drv->input_drvs[i];
        r = obi_buf_append_str(buf, i > 0 ? ",(" : "(");
        if (r >= 0)
            r = write_string(buf, in->drv_path);
        if (r >= 0)
            r = obi_buf_append(buf, ",", 1);
        if (r >= 0)
            r = write_string_list(buf, in->outputs, in->n_outputs);
        if (r >= 0)
            r = obi_buf_append(buf, ")", 1);
    }
    if (r >= 0)
        r = obi_buf_append_str(buf, "],");
    if (r >= 0)
        r = write_string_list(buf, drv->input_srcs, drv->n_input_srcs);
    if (r >= 0)
        r = obi_buf_append(buf, ",", 1);
    if (r >= 0)
        r = write_string(buf, drv->system);
    if (r >= 0)
        r = obi_buf_append(buf, ",", 1);
    if (r >= 0)
        r = write_string(buf, drv->builder);
    if (r >= 0)
        r = obi_buf_append(buf, ",", 1);
    if (r >= 0)
        r = write_string_list(buf, drv->args, drv->n_args);
    if (r >= 0)
        r = obi_buf_append_str(buf, ",[");
    for (size_t i = 0; i < drv->n_env && r >= 0; i++) {
        r = obi_buf_append_str(buf, i > 0 ? ",(" : "(");
        if (r >= 0)
            r = write_string(buf, drv->env[i].key);
        if (r >= 0)
            r = obi_buf_append(buf, ",", 1);
        if (r >= 0)
            r = write_string(buf, drv->env[i].value);
        if (r >= 0)
            r = obi_buf_append(buf, ")", 1);
    }
    if (r >= 0)
        r = obi_buf_append_str(buf, "])");
    return r;
}

int obi_derivation_serialize(const obi_derivation *drv, char **out, size_t *out_len,
                             obi_error **err)
{
    cleanup_buf obi_buf buf = OBI_BUF_INIT;
    if (write_derivation(&buf, drv) < 0)
        return obi_error_set(err, -ENOMEM, "drv: serialize: out of memory");
    size_t len = buf.len;
    *out = obi_buf_steal(&buf);
    if (out_len)
        *out_len = len;
    return 0;
}

/* ---- JSON (as nix show-derivation) ---- */

/* Nix 2.8 writes this JSON itself (json.cc), not through a JSON library: two-space indents,
 * and strings escaped byte by byte, so bytes that are not UTF-8 pass through as they are. */
typedef struct json_writer {
    obi_buf *out;
    int r;           /* the first failure; later writes are skipped */
    obi_error **err; /* set by a failure other than out of memory */
} json_writer;

static void put(json_writer *w, const char *text, size_t len)
{
    if (w->r >= 0)
        w->r = obi_buf_append(w->out, text, len);
}

static void put_str(json_writer *w, const char *text)
{
    put(w, text, strlen(text));
}

static void put_string(json_writer *w, const char *s)
{
    put(w, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p && w->r >= 0; p++) {
        char escape[8];
        switch (*p) {
        case '"':
            put_str(w, "\\\"");
            break;
        case '\\':
            put_str(w, "\\\\");
            break;
        case '\n':
            put_str(w, "\\n");
            break;
        case '\r':
            put_str(w, "\\r");
            break;
        case '\t':
            put_str(w, "\\t");
            break;
        default:
            if (*p < 0x20) {
                snprintf(escape, sizeof escape, "\\u%04x", *p);
                put_str(w, escape);
            } else {
                put(w, (const char *)p, 1);
            }
        }
    }
    put(w, "\"", 1);
}

/* The start of the i-th member (key NULL: of an array) at depth level. */
static void put_member(json_writer *w, size_t i, int level, const char *key)
{
    put_str(w, i ? ",\n" : "\n");
    for (int l = 0; l < level; l++)
        put(w, "  ", 2);
    if (key) {
        put_string(w, key);
        put(w, ": ", 2);
    }
}

/* Closes an object or array of n members opened at depth level - 1. */
static void put_close(json_writer *w, size_t n, int level, const char *close)
{
    if (n) {
        put(w, "\n", 1);
        for (int l = 0; l < level - 1; l++)
            put(w, "  ", 2);
    }
    put_str(w, close);
}

static void put_strings(json_writer *w, char *const *items, size_t n, int level)
{
    put(w, "[", 1);
    for (size_t i = 0; i < n; i++) {
        put_member(w, i, level, NULL);
        put_string(w, items[i]);
    }
    put_close(w, n, level, "]");
}

/* One derivation's object, its members at depth level. */
static void put_derivation(json_writer *w, const obi_derivation *drv, int level)
{
    put(w, "{", 1);
    put_member(w, 0, level, "outputs");
    put(w, "{", 1);
    for (size_t i = 0; i < drv->n_outputs; i++) {
        const obi_derivation_output *o = &drv->outputs[i];
        put_member(w, i, level + 1, o->name);
        put(w, "{", 1);
        /* as Nix: a fixed output's path computed from its hash, none for floating/deferred */
        cleanup_free char *path = NULL;
        if (w->r >= 0)
            w->r = obi_derivation_output_path(drv, o, &path, w->err);
        size_t n = 0;
        if (path) {
            put_member(w, n++, level + 2, "path");
            put_string(w, path);
        }
        if (*o->hash_algo) {
            put_member(w, n++, level + 2, "hashAlgo");
            put_string(w, o->hash_algo);
        }
        if (*o->hash) {
            put_member(w, n++, level + 2, "hash");
            put_string(w, o->hash);
        }
        put_close(w, n, level + 2, "}");
    }
    put_close(w, drv->n_outputs, level + 1, "}");
    put_member(w, 1, level, "inputSrcs");
    put_strings(w, drv->input_srcs, drv->n_input_srcs, level + 1);
    put_member(w, 2, level, "inputDrvs");
    put(w, "{", 1);
    for (size_t i = 0; i < drv->n_input_drvs; i++) {
        put_member(w, i, level + 1, drv->input_drvs[i].drv_path);
        put_strings(w, drv->input_drvs[i].outputs, drv->input_drvs[i].n_outputs, level + 2);
    }
    put_close(w, drv->n_input_drvs, level + 1, "}");
    put_member(w, 3, level, "system");
    put_string(w, drv->system);
    put_member(w, 4, level, "builder");
    put_string(w, drv->builder);
    put_member(w, 5, level, "args");
    put_strings(w, drv->args, drv->n_args, level + 1);
    put_member(w, 6, level, "env");
    put(w, "{", 1);
    for (size_t i = 0; i < drv->n_env; i++) {
        put_member(w, i, level + 1, drv->env[i].key);
        put_string(w, drv->env[i].value);
    }
    put_close(w, drv->n_env, level + 1, "}");
    put_close(w, 7, level, "}");
}

int obi_derivations_show_json(char *const *names, const obi_derivation *const *drvs, size_t n,
                              obi_buf *out, obi_error **err)
{
    json_writer w = {out, 0, err};
    put(&w, "{", 1);
    for (size_t i = 0; i < n; i++) {
        put_member(&w, i, 1, names[i]);
        put_derivation(&w, drvs[i], 2);
    }
    put_close(&w, n, 1, "}\n");
    if (w.r < 0)
        return err && *err ? w.r : obi_error_oom(err);
    return 0;
}

/* ---- queries ---- */

int obi_derivation_kind_of(const obi_derivation *drv, obi_derivation_kind *out, obi_error **err)
{
    size_t input_addressed = 0, deferred = 0, fixed = 0, floating = 0;
    const char *floating_algo = NULL;
    for (size_t i = 0; i < drv->n_outputs; i++) {
        const obi_derivation_output *o = &drv->outputs[i];
        if (!*o->hash_algo && *o->path) {
            input_addressed++;
        } else if (!*o->hash_algo) {
            deferred++;
        } else if (*o->hash) {
            fixed++;
        } else {
            /* "r:sha256" and "sha256" hash alike: the type is the part after "r:" */
            const char *algo =
                strncmp(o->hash_algo, "r:", 2) == 0 ? o->hash_algo + 2 : o->hash_algo;
            if (floating_algo && strcmp(floating_algo, algo) != 0)
                return obi_error_set(err, -EINVAL,
                                     "all floating outputs must use the same hash type");
            floating_algo = algo;
            floating++;
        }
    }
    size_t kinds = !!input_addressed + !!deferred + !!fixed + !!floating;
    if (kinds == 0)
        return obi_error_set(err, -EINVAL, "must have at least one output");
    if (kinds > 1)
        return obi_error_set(err, -EINVAL, "can't mix derivation output types");
    if (fixed > 1)
        return obi_error_set(err, -EINVAL, "only one fixed output is allowed for now");
    if (fixed && strcmp(drv->outputs[0].name, "out") != 0)
        return obi_error_set(err, -EINVAL, "single fixed output must be named \"out\"");
    *out = input_addressed ? OBI_DRV_INPUT_ADDRESSED
           : deferred      ? OBI_DRV_DEFERRED
           : fixed         ? OBI_DRV_FIXED_OUTPUT
                           : OBI_DRV_FLOATING;
    return 0;
}

int obi_derivation_output_path(const obi_derivation *drv, const obi_derivation_output *o,
                               char **out, obi_error **err)
{
    *out = NULL;
    if (!*o->hash_algo) {
        if (*o->path && !(*out = strdup(o->path)))
            return obi_error_oom(err);
        return 0;
    }
    if (!*o->hash)
        return 0;
    if (!drv->name) { /* parsed from text: the path written is all there is */
        if (!(*out = strdup(o->path)))
            return obi_error_oom(err);
        return 0;
    }
    bool recursive = false;
    const char *algo = NULL;
    size_t len = 0;
    int r = obi_derivation_hash_algo_parse(o->hash_algo, &recursive, &algo, &len, err);
    if (r < 0)
        return r;
    uint8_t digest[64];
    if (strlen(o->hash) != 2 * len || obi_hex_decode(o->hash, 2 * len, digest, len) < 0)
        return obi_error_set(err, -EINVAL, "output '%s': hash is not %zu hex digits", o->name,
                             2 * len);
    cleanup_free char *name = obi_nix_output_path_name(drv->name, o->name);
    if (!name)
        return obi_error_oom(err);
    return obi_nix_make_fixed_output_path(recursive, algo, digest, len, name, NULL, 0, false, out,
                                          err);
}

bool obi_derivation_is_fixed_output(const obi_derivation *drv)
{
    return drv->n_outputs == 1 && strcmp(drv->outputs[0].name, "out") == 0 &&
           *drv->outputs[0].hash_algo && *drv->outputs[0].hash;
}

const obi_derivation_output *obi_derivation_find_output(const obi_derivation *drv, const char *name)
{
    for (size_t i = 0; i < drv->n_outputs; i++)
        if (strcmp(drv->outputs[i].name, name) == 0)
            return &drv->outputs[i];
    return NULL;
}

const char *obi_derivation_get_env(const obi_derivation *drv, const char *key)
{
    for (size_t i = 0; i < drv->n_env; i++)
        if (strcmp(drv->env[i].key, key) == 0)
            return drv->env[i].value;
    return NULL;
}
