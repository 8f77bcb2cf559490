/*
 * protobuf's canonical JSON mapping for the castore Node message (a oneof of DirectoryNode,
 * FileNode and SymlinkNode), as used by the JSON form of BuildRequest and Build (build.md):
 *   {"directory": {"name": "<base64>", "digest": "<base64>", "size": "12"}}
 *   {"file": {"name": ..., "digest": ..., "size": "3", "executable": true}}
 *   {"symlink": {"name": ..., "target": ...}}
 * Output omits defaults and writes uint64 as a decimal string. Input accepts standard or URL-safe
 * base64 (padding optional), uint64 as a string or a number, null as "default", and refuses
 * unknown keys and a second oneof member. Field names have no lowerCamelCase variant here.
 * Like the binary decoder this does not validate names (obi_node_validate does).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "node_internal.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/json_util.h"
#include "ocibuild/node.h"

static const char *const MEMBERS[] = {NULL, "directory", "file", "symlink"};

/* ---- output -------------------------------------------------------------------------------- */

static int set_bytes(json_t *obj, const char *key, const uint8_t *data, size_t len)
{
    if (len == 0)
        return 0;
    cleanup_free char *text = malloc(obi_base64_encoded_len(len) + 1);
    if (!text)
        return -ENOMEM;
    obi_base64_encode(data, len, text);
    return json_object_set_new(obj, key, json_string(text)) == 0 ? 0 : -ENOMEM;
}

json_t *obi_node_to_json(const obi_node *node)
{
    if (node->kind != OBI_NODE_DIRECTORY && node->kind != OBI_NODE_FILE &&
        node->kind != OBI_NODE_SYMLINK)
        return NULL;
    cleanup_json json_t *inner = json_object();
    if (!inner)
        return NULL;
    if (set_bytes(inner, "name", node->name.data, node->name.len) < 0)
        return NULL;
    if (node->kind == OBI_NODE_SYMLINK) {
        if (set_bytes(inner, "target", node->target.data, node->target.len) < 0)
            return NULL;
    } else {
        if (set_bytes(inner, "digest", node->digest.bytes, OBI_DIGEST_LEN) < 0)
            return NULL;
        if (node->size != 0) {
            char text[24];
            snprintf(text, sizeof text, "%" PRIu64, node->size);
            if (json_object_set_new(inner, "size", json_string(text)) < 0)
                return NULL;
        }
        if (node->kind == OBI_NODE_FILE && node->executable &&
            json_object_set_new(inner, "executable", json_true()) < 0)
            return NULL;
    }
    json_t *outer = json_object();
    if (!outer || json_object_set(outer, MEMBERS[node->kind], inner) < 0) {
        json_decref(outer);
        return NULL;
    }
    return outer;
}

/* ---- input --------------------------------------------------------------------------------- */

static int bytes_from_json(const json_t *value, const char *where, const char *key, obi_bytes *out,
                           obi_error **err)
{
    if (json_is_null(value))
        return 0;
    if (!json_is_string(value))
        return obi_error_set(err, -EINVAL, "%s.%s: expected a base64 string", where, key);
    const char *text = json_string_value(value);
    size_t len = json_string_length(value);
    /* protobuf's JSON parsers accept unpadded base64: pad it before the strict decoder. */
    cleanup_free char *padded = malloc(len + 3);
    if (!padded)
        return obi_error_oom(err);
    memcpy(padded, text, len);
    while (len % 4 != 0 && len % 4 != 1)
        padded[len++] = '=';
    uint8_t *data = NULL;
    size_t data_len = 0;
    int r = obi_base64_decode(padded, len, &data, &data_len, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s.%s", where, key);
    r = obi_bytes_set(out, data, data_len); /* a NUL-terminated copy, as the model promises */
    free(data);
    if (r < 0)
        return obi_error_oom(err);
    return 0;
}

static int uint64_from_json(const json_t *value, const char *where, const char *key, uint64_t *out,
                            obi_error **err)
{
    if (json_is_null(value))
        return 0;
    if (json_is_integer(value)) {
        json_int_t v = json_integer_value(value);
        if (v < 0)
            return obi_error_set(err, -EINVAL, "%s.%s: %lld is negative", where, key, (long long)v);
        *out = (uint64_t)v;
        return 0;
    }
    if (json_is_real(value)) {
        double v = json_real_value(value);
        if (!(v >= 0 && v < 18446744073709551616.0) || (double)(uint64_t)v != v)
            return obi_error_set(err, -EINVAL, "%s.%s: %g is not a uint64", where, key, v);
        *out = (uint64_t)v;
        return 0;
    }
    if (!json_is_string(value))
        return obi_error_set(err, -EINVAL, "%s.%s: expected a uint64 as a string or number", where,
                             key);
    const char *text = json_string_value(value);
    size_t len = json_string_length(value);
    if (len == 0)
        return obi_error_set(err, -EINVAL, "%s.%s: empty string is not a uint64", where, key);
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return obi_error_set(err, -EINVAL, "%s.%s: \"%s\" is not a decimal uint64", where, key,
                                 text);
        unsigned digit = (unsigned)(text[i] - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return obi_error_set(err, -EINVAL, "%s.%s: \"%s\" does not fit in uint64", where, key,
                                 text);
        v = v * 10 + digit;
    }
    *out = v;
    return 0;
}

static int bool_from_json(const json_t *value, const char *where, const char *key, bool *out,
                          obi_error **err)
{
    if (json_is_null(value))
        return 0;
    if (!json_is_boolean(value))
        return obi_error_set(err, -EINVAL, "%s.%s: expected true or false", where, key);
    *out = json_is_true(value);
    return 0;
}

static bool key_allowed(obi_node_kind kind, const char *key)
{
    if (strcmp(key, "name") == 0)
        return true;
    if (kind == OBI_NODE_SYMLINK)
        return strcmp(key, "target") == 0;
    if (strcmp(key, "digest") == 0 || strcmp(key, "size") == 0)
        return true;
    return kind == OBI_NODE_FILE && strcmp(key, "executable") == 0;
}

static int member_from_json(const json_t *obj, obi_node_kind kind, obi_node *out, obi_error **err)
{
    char where[32];
    snprintf(where, sizeof where, "node.%s", MEMBERS[kind]);
    if (!json_is_object(obj))
        return obi_error_set(err, -EINVAL, "%s: expected a JSON object", where);
    cleanup_node obi_node n = {.kind = kind};
    obi_bytes digest = {NULL, 0};
    const char *key;
    json_t *value;
    int r = 0;
    json_object_foreach((json_t *)obj, key, value)
    {
        if (!key_allowed(kind, key))
            r = obi_error_set(err, -EINVAL, "%s: unknown key \"%s\"", where, key);
        else if (strcmp(key, "name") == 0)
            r = bytes_from_json(value, where, key, &n.name, err);
        else if (strcmp(key, "target") == 0)
            r = bytes_from_json(value, where, key, &n.target, err);
        else if (strcmp(key, "digest") == 0)
            r = bytes_from_json(value, where, key, &digest, err);
        else if (strcmp(key, "size") == 0)
            r = uint64_from_json(value, where, key, &n.size, err);
        else
            r = bool_from_json(value, where, key, &n.executable, err);
        if (r < 0)
            break;
    }
    if (r == 0 && kind != OBI_NODE_SYMLINK) {
        if (digest.len == OBI_DIGEST_LEN) {
            memcpy(n.digest.bytes, digest.data, OBI_DIGEST_LEN);
        } else {
            char q[OBI_NAME_QUOTED_MAX];
            r = obi_error_set(err, -EINVAL, "%s node %s: digest is %zu bytes, expected %d",
                              MEMBERS[kind], obi_name_quote(n.name.data, n.name.len, q), digest.len,
                              OBI_DIGEST_LEN);
        }
    }
    obi_bytes_clear(&digest);
    if (r < 0)
        return r;
    /* Every obi_bytes in the model is allocated, even when empty. */
    if ((!n.name.data && obi_bytes_set(&n.name, "", 0) < 0) ||
        (kind == OBI_NODE_SYMLINK && !n.target.data && obi_bytes_set(&n.target, "", 0) < 0))
        return obi_error_oom(err);
    *out = n;
    memset(&n, 0, sizeof n);
    return 0;
}

int obi_node_from_json(const json_t *json, obi_node *out, obi_error **err)
{
    if (!json_is_object(json))
        return obi_error_set(err, -EINVAL, "node: expected a JSON object");
    obi_node_kind kind = 0;
    const json_t *member = NULL;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)json, key, value)
    {
        obi_node_kind k = 0;
        for (int i = 1; i <= 3; i++)
            if (strcmp(key, MEMBERS[i]) == 0)
                k = (obi_node_kind)i;
        if (k == 0)
            return obi_error_set(err, -EINVAL,
                                 "node: unknown key \"%s\" (expected directory, file or symlink)",
                                 key);
        if (json_is_null(value))
            continue;
        if (member) {
            /* Name the two members in a stable order, whatever the object's key order. */
            obi_node_kind a = kind < k ? kind : k, b = kind < k ? k : kind;
            return obi_error_set(err, -EINVAL,
                                 "node: both \"%s\" and \"%s\" are set; only one of the oneof "
                                 "node may be",
                                 MEMBERS[a], MEMBERS[b]);
        }
        kind = k;
        member = value;
    }
    if (!member)
        return obi_error_set(err, -EINVAL, "node: none of directory, file or symlink is set");
    return member_from_json(member, kind, out, err);
}
