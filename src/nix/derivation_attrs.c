/*
 * Derivation attributes, structured or not (see include/ocibuild/derivation_attrs.h): typed
 * getters with Nix 2.8's messages, the exportReferencesGraph specification, and the writers of
 * .attrs.json (Nix's JSON library's formatting) and .attrs.sh.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/derivation_attrs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/strv.h"

#define WHITESPACE " \t\n\r"

struct obi_derivation_attrs {
    const obi_derivation *drv;
    const char *drv_path;
    json_t *structured; /* NULL: attributes are the env */
};

int obi_derivation_attrs_new(const obi_derivation *drv, const char *drv_path,
                             obi_derivation_attrs **out, obi_error **err)
{
    cleanup_json json_t *structured = NULL;
    const char *text = obi_derivation_get_env(drv, "__json");
    if (text) {
        json_error_t json_err;
        structured = json_loads(text, JSON_DECODE_ANY, &json_err);
        if (!structured)
            return obi_error_set(err, -EINVAL,
                                 "cannot process __json attribute of '%s': line %d column %d: %s",
                                 drv_path, json_err.line, json_err.column, json_err.text);
        if (!json_is_object(structured))
            return obi_error_set(err, -EINVAL,
                                 "cannot process __json attribute of '%s': not a JSON object",
                                 drv_path);
    }
    obi_derivation_attrs *attrs = calloc(1, sizeof *attrs);
    if (!attrs)
        return obi_error_oom(err);
    attrs->drv = drv;
    attrs->drv_path = drv_path;
    attrs->structured = steal_pointer(&structured);
    *out = attrs;
    return 0;
}

void obi_derivation_attrs_free(obi_derivation_attrs *attrs)
{
    if (!attrs)
        return;
    json_decref(attrs->structured);
    free(attrs);
}

const json_t *obi_derivation_attrs_structured(const obi_derivation_attrs *attrs)
{
    return attrs->structured;
}

static int attr_type_error(const obi_derivation_attrs *attrs, const char *name, const char *what,
                           obi_error **err)
{
    return obi_error_set(err, -EINVAL, "attribute '%s' of derivation '%s' must be %s", name,
                         attrs->drv_path, what);
}

int obi_derivation_attrs_get_string(const obi_derivation_attrs *attrs, const char *name,
                                    const char **out, obi_error **err)
{
    *out = NULL;
    if (!attrs->structured) {
        *out = obi_derivation_get_env(attrs->drv, name);
        return *out ? 1 : 0;
    }
    const json_t *v = json_object_get(attrs->structured, name);
    if (!v)
        return 0;
    if (!json_is_string(v))
        return attr_type_error(attrs, name, "a string", err);
    *out = json_string_value(v);
    return 1;
}

int obi_derivation_attrs_get_bool(const obi_derivation_attrs *attrs, const char *name, bool def,
                                  bool *out, obi_error **err)
{
    *out = def;
    if (!attrs->structured) {
        const char *v = obi_derivation_get_env(attrs->drv, name);
        if (v)
            *out = strcmp(v, "1") == 0;
        return 0;
    }
    const json_t *v = json_object_get(attrs->structured, name);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return attr_type_error(attrs, name, "a Boolean", err);
    *out = json_is_true(v);
    return 0;
}

/* Nix's tokenizeString on whitespace; NULL-terminated. */
static int split_words(const char *s, char ***out, size_t *n_out)
{
    size_t n = 0;
    cleanup_strv char **words = calloc(strlen(s) / 2 + 2, sizeof *words);
    if (!words)
        return -ENOMEM;
    for (const char *p = s + strspn(s, WHITESPACE); *p; p += strspn(p, WHITESPACE)) {
        size_t len = strcspn(p, WHITESPACE);
        if (!(words[n++] = strndup(p, len)))
            return -ENOMEM;
        p += len;
    }
    *out = steal_pointer(&words);
    *n_out = n;
    return 0;
}

int obi_derivation_attrs_get_strings(const obi_derivation_attrs *attrs, const char *name,
                                     char ***out, size_t *n_out, obi_error **err)
{
    *out = NULL;
    *n_out = 0;
    if (!attrs->structured) {
        const char *v = obi_derivation_get_env(attrs->drv, name);
        if (!v)
            return 0;
        if (split_words(v, out, n_out) < 0)
            return obi_error_oom(err);
        return 1;
    }
    const json_t *v = json_object_get(attrs->structured, name);
    if (!v)
        return 0;
    if (!json_is_array(v))
        return attr_type_error(attrs, name, "a list of strings", err);
    cleanup_strv char **items = calloc(json_array_size(v) + 1, sizeof *items);
    if (!items)
        return obi_error_oom(err);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *item = json_array_get(v, i);
        if (!json_is_string(item))
            return attr_type_error(attrs, name, "a list of strings", err);
        if (!(items[i] = strdup(json_string_value(item))))
            return obi_error_oom(err);
    }
    *n_out = json_array_size(v);
    *out = steal_pointer(&items);
    return 1;
}

/* Sorts a NULL-terminated list of n strings and drops duplicates; returns the new count. */
static size_t sort_unique(char **items, size_t n)
{
    if (n > 1)
        qsort(items, n, sizeof *items, obi_strv_item_compare);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (kept > 0 && strcmp(items[kept - 1], items[i]) == 0) {
            free(items[i]);
            continue;
        }
        items[kept++] = items[i];
    }
    items[kept] = NULL;
    return kept;
}

int obi_derivation_attrs_required_features(const obi_derivation_attrs *attrs, char ***out,
                                           size_t *n_out, obi_error **err)
{
    cleanup_strv char **listed = NULL;
    size_t n = 0;
    int r = obi_derivation_attrs_get_strings(attrs, "requiredSystemFeatures", &listed, &n, err);
    if (r < 0)
        return r;
    obi_derivation_kind kind = OBI_DRV_INPUT_ADDRESSED;
    r = obi_derivation_kind_of(attrs->drv, &kind, err);
    if (r < 0)
        return r;
    bool ca = kind == OBI_DRV_FLOATING || kind == OBI_DRV_DEFERRED;
    cleanup_strv char **features = calloc(n + 2, sizeof *features);
    if (!features)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++)
        features[i] = steal_pointer(&listed[i]);
    if (ca && !(features[n++] = strdup("ca-derivations")))
        return obi_error_oom(err);
    *n_out = sort_unique(features, n);
    *out = steal_pointer(&features);
    return 0;
}

/* ---- exportReferencesGraph ---- */

void obi_export_graph_specs_free(obi_export_graph_spec *specs, size_t n)
{
    if (!specs)
        return;
    for (size_t i = 0; i < n; i++) {
        free(specs[i].name);
        if (specs[i].paths)
            obi_strv_free(specs[i].paths);
    }
    free(specs);
}

/* [A-Za-z_][A-Za-z0-9_.-]* */
static bool valid_graph_file_name(const char *name)
{
    if (!(isalpha((unsigned char)name[0]) || name[0] == '_'))
        return false;
    for (const char *p = name + 1; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("_.-", *p)))
            return false;
    return true;
}

/* The store path that path is or lies below, or NULL (not in the store). */
static char *store_path_of(const char *path)
{
    const char *prefix = OBI_NIX_STORE_DIR "/";
    size_t plen = strlen(prefix);
    if (strncmp(path, prefix, plen) != 0)
        return NULL;
    size_t base_len = strcspn(path + plen, "/");
    cleanup_free char *candidate = strndup(path, plen + base_len);
    const char *base;
    cleanup_error obi_error *ignored = NULL;
    if (!candidate || obi_nix_store_path_parse(candidate, &base, &ignored) < 0)
        return NULL;
    return steal_pointer(&candidate);
}

static int specs_from_env(const obi_derivation_attrs *attrs, obi_export_graph_spec **out,
                          size_t *n_out, obi_error **err)
{
    const char *value = obi_derivation_get_env(attrs->drv, "exportReferencesGraph");
    cleanup_strv char **words = NULL;
    size_t n = 0;
    if (split_words(value ? value : "", &words, &n) < 0)
        return obi_error_oom(err);
    if (n % 2 != 0)
        return obi_error_set(err, -EINVAL, "odd number of tokens in 'exportReferencesGraph': '%s'",
                             value);
    if (n == 0) {
        *out = NULL;
        *n_out = 0;
        return 0;
    }
    obi_export_graph_spec *specs = calloc(n / 2 + 1, sizeof *specs);
    if (!specs)
        return obi_error_oom(err);
    size_t made = 0;
    int r = 0;
    for (size_t i = 0; r >= 0 && i < n; i += 2) {
        if (!valid_graph_file_name(words[i])) {
            r = obi_error_set(err, -EINVAL, "invalid file name '%s' in 'exportReferencesGraph'",
                              words[i]);
            break;
        }
        char *path = store_path_of(words[i + 1]);
        if (!path) {
            r = obi_error_set(err, -EINVAL,
                              "'exportReferencesGraph' contains a non-store path '%s'",
                              words[i + 1]);
            break;
        }
        obi_export_graph_spec *spec = &specs[made++];
        /* copied: words stays a whole NULL-terminated list for its cleanup */
        spec->name = strdup(words[i]);
        spec->paths = calloc(2, sizeof *spec->paths);
        if (!spec->name || !spec->paths) {
            free(path);
            r = obi_error_oom(err);
            break;
        }
        spec->paths[0] = path;
        spec->n_paths = 1;
    }
    if (r < 0) {
        obi_export_graph_specs_free(specs, made);
        return r;
    }
    *out = specs;
    *n_out = made;
    return 0;
}

/* Adds one structured path, which must be a store path itself. */
static int add_structured_path(obi_export_graph_spec *spec, const json_t *v, obi_error **err)
{
    if (!json_is_string(v))
        return obi_error_set(err, -EINVAL, "exportReferencesGraph.%s: expected a store path",
                             spec->name);
    const char *base;
    int r = obi_nix_store_path_parse(json_string_value(v), &base, err);
    if (r < 0)
        return obi_error_prefix(err, r, "exportReferencesGraph.%s", spec->name);
    if (!(spec->paths[spec->n_paths] = strdup(json_string_value(v))))
        return obi_error_oom(err);
    spec->n_paths++;
    return 0;
}

static int specs_from_json(const json_t *graph, obi_export_graph_spec **out, size_t *n_out,
                           obi_error **err)
{
    obi_export_graph_spec *specs = calloc(json_object_size(graph) + 1, sizeof *specs);
    if (!specs)
        return obi_error_oom(err);
    size_t made = 0;
    int r = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)graph, key, v)
    {
        obi_export_graph_spec *spec = &specs[made++];
        size_t n = json_is_array(v) ? json_array_size(v) : 1;
        spec->name = strdup(key);
        spec->paths = calloc(n + 1, sizeof *spec->paths);
        if (!spec->name || !spec->paths) {
            r = obi_error_oom(err);
            break;
        }
        for (size_t i = 0; r >= 0 && i < n; i++)
            r = add_structured_path(spec, json_is_array(v) ? json_array_get(v, i) : v, err);
        if (r < 0)
            break;
    }
    if (r < 0) {
        obi_export_graph_specs_free(specs, made);
        return r;
    }
    *out = specs;
    *n_out = made;
    return 0;
}

int obi_derivation_attrs_export_graphs(const obi_derivation_attrs *attrs,
                                       obi_export_graph_spec **out, size_t *n_out, obi_error **err)
{
    *out = NULL;
    *n_out = 0;
    if (!attrs->structured)
        return specs_from_env(attrs, out, n_out, err);
    const json_t *graph = json_object_get(attrs->structured, "exportReferencesGraph");
    if (!graph || !json_is_object(graph))
        return 0;
    return specs_from_json(graph, out, n_out, err);
}

/* ---- .attrs.json: Nix's JSON library's output ---- */

static int dump_string(obi_buf *buf, const char *s, size_t len)
{
    int r = obi_buf_append(buf, "\"", 1);
    for (size_t i = 0; r >= 0 && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        static const char short_escapes[][3] = {
            ['\b'] = "\\b", ['\f'] = "\\f", ['\n'] = "\\n", ['\r'] = "\\r", ['\t'] = "\\t"};
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            r = obi_buf_append(buf, esc, 2);
        } else if (c < 0x20 && short_escapes[c][0]) {
            r = obi_buf_append(buf, short_escapes[c], 2);
        } else if (c < 0x20) {
            r = obi_buf_appendf(buf, "\\u%04x", c);
        } else {
            r = obi_buf_append(buf, &s[i], 1);
        }
    }
    return r < 0 ? r : obi_buf_append(buf, "\"", 1);
}

/* A double as Nix's JSON library prints it: the shortest digits that read back the same, as
 * "123.0", "1.5", "0.001" or "1.5e+20". */
static int dump_real(obi_buf *buf, double x)
{
    if (!isfinite(x))
        return obi_buf_append_str(buf, "null");
    if (x == 0)
        return obi_buf_append_str(buf, signbit(x) ? "-0.0" : "0.0");
    char sci[64];
    for (int precision = 0; precision <= 17; precision++) {
        snprintf(sci, sizeof sci, "%.*e", precision, x);
        if (strtod(sci, NULL) == x)
            break;
    }
    /* sci: [-]d[.ddd]e[+-]NN: the digits and the decimal exponent n (point after n digits) */
    const char *p = sci;
    bool negative = *p == '-';
    p += negative;
    char digits[32];
    size_t k = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[k++] = *p;
    digits[k] = '\0';
    int n = (int)strtol(p + 1, NULL, 10) + 1; /* %e wrote the exponent: always digits */
    const int min_exp = -4, max_exp = 15;
    int r = negative ? obi_buf_append(buf, "-", 1) : 0;
    if (r < 0)
        return r;
    if ((int)k <= n && n <= max_exp) {
        r = obi_buf_append(buf, digits, k);
        for (int i = (int)k; r >= 0 && i < n; i++)
            r = obi_buf_append(buf, "0", 1);
        return r < 0 ? r : obi_buf_append_str(buf, ".0");
    }
    if (0 < n && n <= max_exp) {
        r = obi_buf_append(buf, digits, (size_t)n);
        if (r >= 0)
            r = obi_buf_append(buf, ".", 1);
        return r < 0 ? r : obi_buf_append(buf, digits + n, k - (size_t)n);
    }
    if (min_exp < n && n <= 0) {
        r = obi_buf_append_str(buf, "0.");
        for (int i = n; r >= 0 && i < 0; i++)
            r = obi_buf_append(buf, "0", 1);
        return r < 0 ? r : obi_buf_append(buf, digits, k);
    }
    r = obi_buf_append(buf, digits, 1);
    if (r >= 0 && k > 1)
        r = obi_buf_appendf(buf, ".%s", digits + 1);
    int e = n - 1;
    return r < 0 ? r : obi_buf_appendf(buf, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
}

/* The keys of an object, sorted bytewise (NULL-terminated, strings borrowed). */
static const char **sorted_keys(const json_t *object)
{
    const char **keys = calloc(json_object_size(object) + 1, sizeof *keys);
    if (!keys)
        return NULL;
    size_t n = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)object, key, v)
    {
        (void)v;
        keys[n++] = key;
    }
    if (n > 1)
        qsort(keys, n, sizeof *keys, obi_strv_item_compare);
    return keys;
}

static int dump_value(obi_buf *buf, const json_t *v)
{
    int r = 0;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        cleanup_free const char **keys = sorted_keys(v);
        if (!keys)
            return -ENOMEM;
        r = obi_buf_append(buf, "{", 1);
        for (size_t i = 0; r >= 0 && keys[i]; i++) {
            if (i > 0)
                r = obi_buf_append(buf, ",", 1);
            if (r >= 0)
                r = dump_string(buf, keys[i], strlen(keys[i]));
            if (r >= 0)
                r = obi_buf_append(buf, ":", 1);
            if (r >= 0)
                r = dump_value(buf, json_object_get(v, keys[i]));
        }
        return r < 0 ? r : obi_buf_append(buf, "}", 1);
    }
    case JSON_ARRAY:
        r = obi_buf_append(buf, "[", 1);
        for (size_t i = 0; r >= 0 && i < json_array_size(v); i++) {
            if (i > 0)
                r = obi_buf_append(buf, ",", 1);
            if (r >= 0)
                r = dump_value(buf, json_array_get(v, i));
        }
        return r < 0 ? r : obi_buf_append(buf, "]", 1);
    case JSON_STRING:
        return dump_string(buf, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return obi_buf_appendf(buf, "%lld", (long long)json_integer_value(v));
    case JSON_REAL:
        return dump_real(buf, json_real_value(v));
    case JSON_TRUE:
        return obi_buf_append_str(buf, "true");
    case JSON_FALSE:
        return obi_buf_append_str(buf, "false");
    case JSON_NULL:
        return obi_buf_append_str(buf, "null");
    }
    return -EINVAL;
}

char *obi_nix_json_dump(const json_t *value)
{
    cleanup_buf obi_buf buf = OBI_BUF_INIT;
    if (dump_value(&buf, value) < 0 || obi_buf_reserve(&buf, 0) < 0)
        return NULL;
    return obi_buf_steal(&buf);
}

/* ---- .attrs.sh ---- */

/* [A-Za-z_][A-Za-z0-9_]* */
static bool is_shell_name(const char *name)
{
    if (!(isalpha((unsigned char)name[0]) || name[0] == '_'))
        return false;
    for (const char *p = name + 1; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_'))
            return false;
    return true;
}

static int shell_escape(obi_buf *buf, const char *s, size_t len)
{
    int r = obi_buf_append(buf, "'", 1);
    for (size_t i = 0; r >= 0 && i < len; i++)
        r = s[i] == '\'' ? obi_buf_append_str(buf, "'\\''") : obi_buf_append(buf, &s[i], 1);
    return r < 0 ? r : obi_buf_append(buf, "'", 1);
}

/* Nix turns a number into an int (C++'s conversion, which truncates a 64-bit integer); a double
 * outside int's range has no defined conversion, and x86-64 gives INT_MIN. */
static int number_to_int(const json_t *v)
{
    if (json_is_integer(v))
        return (int)(unsigned)(unsigned long long)json_integer_value(v);
    double d = json_real_value(v);
    return d > INT_MIN - 1.0 && d < INT_MAX + 1.0 ? (int)d : INT_MIN;
}

/* Appends a simple value (handleSimpleType); 1 when it was one, 0 when not, negative on OOM. */
static int shell_simple_value(obi_buf *buf, const json_t *v)
{
    int r;
    switch (json_typeof(v)) {
    case JSON_STRING:
        r = shell_escape(buf, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
    case JSON_REAL: {
        /* Nix checks that the value, as a float, is whole */
        float f = json_is_integer(v) ? (float)json_integer_value(v) : (float)json_real_value(v);
        if (ceilf(f) != f)
            return 0;
        r = obi_buf_appendf(buf, "%d", number_to_int(v));
        break;
    }
    case JSON_NULL:
        r = obi_buf_append_str(buf, "''");
        break;
    case JSON_TRUE:
        r = obi_buf_append_str(buf, "1");
        break;
    case JSON_FALSE:
        r = 0;
        break;
    default:
        return 0;
    }
    return r < 0 ? r : 1;
}

/* "declare -a name=(v1 v2 )" / "declare -A name=([k]=v )", or nothing when an element is not
 * simple. */
static int shell_container(obi_buf *out, const char *name, const json_t *v)
{
    cleanup_buf obi_buf items = OBI_BUF_INIT;
    int r = 0;
    if (json_is_array(v)) {
        for (size_t i = 0; r >= 0 && i < json_array_size(v); i++) {
            r = shell_simple_value(&items, json_array_get(v, i));
            if (r == 0)
                return 0;
            if (r > 0)
                r = obi_buf_append(&items, " ", 1);
        }
        if (r < 0)
            return r;
        r = obi_buf_appendf(out, "declare -a %s=(", name);
    } else {
        cleanup_free const char **keys = sorted_keys(v);
        if (!keys)
            return -ENOMEM;
        for (size_t i = 0; r >= 0 && keys[i]; i++) {
            r = obi_buf_append(&items, "[", 1);
            if (r >= 0)
                r = shell_escape(&items, keys[i], strlen(keys[i]));
            if (r >= 0)
                r = obi_buf_append(&items, "]=", 2);
            if (r >= 0)
                r = shell_simple_value(&items, json_object_get(v, keys[i]));
            if (r == 0)
                return 0;
            if (r > 0)
                r = obi_buf_append(&items, " ", 1);
        }
        if (r < 0)
            return r;
        r = obi_buf_appendf(out, "declare -A %s=(", name);
    }
    if (r >= 0 && items.len)
        r = obi_buf_append(out, items.data, items.len);
    return r < 0 ? r : obi_buf_append_str(out, ")\n");
}

char *obi_nix_attrs_shell(const json_t *json)
{
    cleanup_buf obi_buf out = OBI_BUF_INIT;
    cleanup_free const char **keys = sorted_keys(json);
    if (!keys || obi_buf_reserve(&out, 0) < 0)
        return NULL;
    for (size_t i = 0; keys[i]; i++) {
        if (!is_shell_name(keys[i]))
            continue;
        const json_t *v = json_object_get(json, keys[i]);
        cleanup_buf obi_buf value = OBI_BUF_INIT;
        int r = shell_simple_value(&value, v);
        if (r > 0)
            r = obi_buf_appendf(&out, "declare %s=%.*s\n", keys[i], (int)value.len,
                                value.len ? (const char *)value.data : "");
        else if (r == 0 && (json_is_array(v) || json_is_object(v)))
            r = shell_container(&out, keys[i], v);
        if (r < 0)
            return NULL;
    }
    return obi_buf_steal(&out);
}
