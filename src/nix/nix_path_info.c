/*
 * ocibuild's own record of store paths it built (see include/ocibuild/nix_path_info.h): one
 * JSON file per store path basename, replaced atomically, read back with full validation (the
 * file is input like any other: its path, node and references are checked).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/nix_path_info.h"
#include "ocibuild/nix_store.h"

#define PATH_INFO_MAX_SIZE (16u * 1024 * 1024)

struct obi_nix_path_info_store {
    char *dir;
};

void obi_nix_path_info_free(obi_nix_path_info *info)
{
    if (!info)
        return;
    free(info->path);
    obi_node_clear(&info->node);
    if (info->references)
        obi_strv_free(info->references);
    free(info);
}

/* ---- JSON ---- */

json_t *obi_nix_path_info_to_json(const obi_nix_path_info *info)
{
    cleanup_free char *nar_hash = obi_nar_hash_to_string(&info->nar);
    json_t *node = obi_node_to_json(&info->node);
    json_t *refs = json_array();
    cleanup_json json_t *root = json_object();
    bool ok = nar_hash && node && refs && root;
    for (size_t i = 0; ok && i < info->n_references; i++)
        ok = json_array_append_new(refs, json_string(info->references[i])) == 0;
    if (ok)
        ok = json_object_set_new(root, "path", json_string(info->path)) == 0 &&
             json_object_set(root, "node", node) == 0 &&
             json_object_set_new(root, "narHash", json_string(nar_hash)) == 0 &&
             json_object_set_new(root, "narSize", json_integer((json_int_t)info->nar.size)) == 0 &&
             json_object_set(root, "references", refs) == 0;
    json_decref(node);
    json_decref(refs);
    return ok ? steal_pointer(&root) : NULL;
}

static int parse_nar_hash(const char *text, obi_nar_hash *out, obi_error **err)
{
    if (strncmp(text, "sha256:", 7) != 0)
        return obi_error_set(err, -EINVAL, "narHash: expected sha256:<nixbase32>, got '%s'", text);
    int r = obi_nixbase32_decode(text + 7, strlen(text + 7), out->sha256, OBI_SHA256_LEN, err);
    if (r < 0)
        return obi_error_prefix(err, r, "narHash");
    return 0;
}

int obi_nix_path_info_from_json(const json_t *json, obi_nix_path_info **out, obi_error **err)
{
    const json_t *path = json_object_get(json, "path");
    const json_t *node = json_object_get(json, "node");
    const json_t *nar_hash = json_object_get(json, "narHash");
    const json_t *nar_size = json_object_get(json, "narSize");
    const json_t *refs = json_object_get(json, "references");
    if (!json_is_string(path) || !node || !json_is_string(nar_hash) || !json_is_integer(nar_size) ||
        json_integer_value(nar_size) < 0 || !json_is_array(refs))
        return obi_error_set(err, -EINVAL,
                             "path info: expected path, node, narHash, narSize and references");
    obi_nix_path_info *info = calloc(1, sizeof *info);
    if (!info)
        return obi_error_oom(err);
    _cleanup_(obi_nix_path_info_freep) obi_nix_path_info *owned = info;
    info->path = strdup(json_string_value(path));
    info->references = calloc(json_array_size(refs) + 1, sizeof *info->references);
    if (!info->path || !info->references)
        return obi_error_oom(err);
    const char *base;
    int r = obi_nix_store_path_parse(info->path, &base, err);
    if (r < 0)
        return obi_error_prefix(err, r, "path info: path");
    r = obi_node_from_json(node, &info->node, err);
    if (r >= 0)
        r = obi_node_validate(&info->node, err);
    if (r < 0)
        return obi_error_prefix(err, r, "path info %s: node", info->path);
    if (info->node.name.len != strlen(base) || memcmp(info->node.name.data, base, strlen(base)))
        return obi_error_set(err, -EINVAL, "path info %s: node is not named '%s'", info->path,
                             base);
    r = parse_nar_hash(json_string_value(nar_hash), &info->nar, err);
    if (r < 0)
        return obi_error_prefix(err, r, "path info %s", info->path);
    info->nar.size = (uint64_t)json_integer_value(nar_size);
    for (size_t i = 0; i < json_array_size(refs); i++) {
        const json_t *ref = json_array_get(refs, i);
        const char *ref_base;
        if (!json_is_string(ref))
            return obi_error_set(err, -EINVAL, "path info %s: references[%zu]: not a string",
                                 info->path, i);
        r = obi_nix_store_path_parse(json_string_value(ref), &ref_base, err);
        if (r < 0)
            return obi_error_prefix(err, r, "path info %s: references[%zu]", info->path, i);
        info->references[i] = strdup(json_string_value(ref));
        if (!info->references[i])
            return obi_error_oom(err);
        info->n_references++;
    }
    *out = steal_pointer(&owned);
    return 0;
}

/* ---- the directory ---- */

int obi_nix_path_info_store_open(const char *dir, obi_nix_path_info_store **out, obi_error **err)
{
    cleanup_free char *chosen = NULL;
    if (dir) {
        chosen = strdup(dir);
    } else {
        cleanup_free char *data = obi_default_data_dir();
        chosen = data ? obi_path_join(data, "nix-path-info") : NULL;
    }
    if (!chosen)
        return obi_error_oom(err);
    int r = obi_mkdir_p(chosen, 0755, err);
    if (r < 0)
        return obi_error_prefix(err, r, "nix path info store %s", chosen);
    obi_nix_path_info_store *store = calloc(1, sizeof *store);
    if (!store)
        return obi_error_oom(err);
    store->dir = steal_pointer(&chosen);
    *out = store;
    return 0;
}

void obi_nix_path_info_store_close(obi_nix_path_info_store *store)
{
    if (!store)
        return;
    free(store->dir);
    free(store);
}

static int file_for(obi_nix_path_info_store *store, const char *path, char **file_out,
                    obi_error **err)
{
    const char *base;
    int r = obi_nix_store_path_parse(path, &base, err);
    if (r < 0)
        return r;
    char *file = NULL;
    if (asprintf(&file, "%s/%s.json", store->dir, base) < 0)
        return obi_error_oom(err);
    *file_out = file;
    return 0;
}

int obi_nix_path_info_get(obi_nix_path_info_store *store, const char *path, obi_nix_path_info **out,
                          obi_error **err)
{
    cleanup_free char *file = NULL;
    int r = file_for(store, path, &file, err);
    if (r < 0)
        return r;
    cleanup_free char *text = NULL;
    size_t len = 0;
    r = obi_read_file(file, PATH_INFO_MAX_SIZE, &text, &len, err);
    if (r < 0)
        return r;
    json_error_t json_err;
    cleanup_json json_t *json = json_loadb(text, len, 0, &json_err);
    if (!json)
        return obi_error_set(err, -EINVAL, "%s: line %d: %s", file, json_err.line, json_err.text);
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    r = obi_nix_path_info_from_json(json, &info, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", file);
    if (strcmp(info->path, path) != 0)
        return obi_error_set(err, -EINVAL, "%s: records %s, not %s", file, info->path, path);
    *out = steal_pointer(&info);
    return 0;
}

int obi_nix_path_info_put(obi_nix_path_info_store *store, const obi_nix_path_info *info,
                          obi_error **err)
{
    cleanup_free char *file = NULL;
    int r = file_for(store, info->path, &file, err);
    if (r < 0)
        return r;
    cleanup_json json_t *json = obi_nix_path_info_to_json(info);
    cleanup_free char *text = json ? json_dumps(json, JSON_SORT_KEYS) : NULL;
    if (!text)
        return obi_error_set(err, -ENOMEM, "path info %s: cannot encode", info->path);
    return obi_write_file_atomic(file, text, strlen(text), 0644, err);
}
