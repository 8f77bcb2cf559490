/*
 * Records of store paths (see include/ocibuild/nix_path_info.h): the JSON form, validated in
 * full when read back (a record is input like any other: its path, node, references and content
 * address are checked), the store interface with its URL registry, and the directory backend:
 * one JSON file per store path basename, replaced atomically, plus a symlink named by the hash
 * part for lookups by hash (written after the record, so a crash between the two only makes the
 * path look unknown to those lookups, never wrong).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/array.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/nix_path_info.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/store_roots.h"
#include "ocibuild/strv.h"

#define PATH_INFO_MAX_SIZE (16u * 1024 * 1024)

void obi_nix_path_info_free(obi_nix_path_info *info)
{
    if (!info)
        return;
    free(info->path);
    obi_node_clear(&info->node);
    if (info->references)
        obi_strv_free(info->references);
    free(info->deriver);
    free(info->ca);
    free(info);
}

/* ---- validation ---- */

int obi_nix_content_address_check(const char *ca, obi_error **err)
{
    static const char *const algos[] = {"md5:", "sha1:", "sha256:", "sha512:"};
    static const char hash_chars[] = "0123456789abcdefghijklmnopqrstuvwxyz"
                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ+/=";
    const char *rest = NULL;
    if (strncmp(ca, "text:sha256:", 12) == 0) {
        rest = ca + 12;
    } else if (strncmp(ca, "fixed:", 6) == 0) {
        const char *algo = ca + 6;
        if (strncmp(algo, "r:", 2) == 0)
            algo += 2;
        for (size_t i = 0; i < OBI_ARRAY_SIZE(algos) && !rest; i++)
            if (strncmp(algo, algos[i], strlen(algos[i])) == 0)
                rest = algo + strlen(algos[i]);
    }
    if (!rest || !rest[0] || strspn(rest, hash_chars) != strlen(rest))
        return obi_error_set(err, -EINVAL, "'%s' is not a content address", ca);
    return 0;
}

int obi_nix_path_info_validate(const obi_nix_path_info *info, obi_error **err)
{
    const char *base;
    int r = obi_nix_store_path_parse(info->path, &base, err);
    if (r < 0)
        return obi_error_prefix(err, r, "path info: path");
    r = obi_node_validate(&info->node, err);
    if (r < 0)
        return obi_error_prefix(err, r, "path info %s: node", info->path);
    if (info->node.name.len != strlen(base) || memcmp(info->node.name.data, base, strlen(base)))
        return obi_error_set(err, -EINVAL, "path info %s: node is not named '%s'", info->path,
                             base);
    for (size_t i = 0; i < info->n_references; i++) {
        const char *ref_base;
        r = obi_nix_store_path_parse(info->references[i], &ref_base, err);
        if (r < 0)
            return obi_error_prefix(err, r, "path info %s: references[%zu]", info->path, i);
    }
    if (info->ca) {
        r = obi_nix_content_address_check(info->ca, err);
        if (r < 0)
            return obi_error_prefix(err, r, "path info %s: ca", info->path);
    }
    return 0;
}

int obi_nix_path_info_ptr_compare(const void *a, const void *b)
{
    return strcmp((*(obi_nix_path_info *const *)a)->path, (*(obi_nix_path_info *const *)b)->path);
}

obi_nix_path_info *obi_nix_path_info_copy(const obi_nix_path_info *info)
{
    cleanup_nix_path_info obi_nix_path_info *copy = calloc(1, sizeof *copy);
    if (!copy || !(copy->path = strdup(info->path)) || obi_node_copy(&copy->node, &info->node) < 0)
        return NULL;
    copy->nar = info->nar;
    if (!(copy->references = calloc(info->n_references + 1, sizeof *copy->references)))
        return NULL;
    for (size_t i = 0; i < info->n_references; i++) {
        if (!(copy->references[i] = strdup(info->references[i])))
            return NULL;
        copy->n_references++;
    }
    if ((info->deriver && !(copy->deriver = strdup(info->deriver))) ||
        (info->ca && !(copy->ca = strdup(info->ca))))
        return NULL;
    return steal_pointer(&copy);
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
    if (ok && info->deriver)
        ok = json_object_set_new(root, "deriver", json_string(info->deriver)) == 0;
    if (ok && info->ca && info->ca[0])
        ok = json_object_set_new(root, "ca", json_string(info->ca)) == 0;
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
    const json_t *deriver = json_object_get(json, "deriver");
    const json_t *ca = json_object_get(json, "ca");
    if (!json_is_string(path) || !node || !json_is_string(nar_hash) || !json_is_integer(nar_size) ||
        json_integer_value(nar_size) < 0 || !json_is_array(refs) || (ca && !json_is_string(ca)))
        return obi_error_set(err, -EINVAL,
                             "path info: expected path, node, narHash, narSize and references");
    if ((deriver && !json_is_string(deriver)) || (ca && !json_is_string(ca)))
        return obi_error_set(err, -EINVAL, "path info: deriver and ca must be strings");
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
    if (r < 0)
        return obi_error_prefix(err, r, "path info %s: node", info->path);
    r = parse_nar_hash(json_string_value(nar_hash), &info->nar, err);
    if (r < 0)
        return obi_error_prefix(err, r, "path info %s", info->path);
    info->nar.size = (uint64_t)json_integer_value(nar_size);
    for (size_t i = 0; i < json_array_size(refs); i++) {
        const json_t *ref = json_array_get(refs, i);
        if (!json_is_string(ref))
            return obi_error_set(err, -EINVAL, "path info %s: references[%zu]: not a string",
                                 info->path, i);
        info->references[i] = strdup(json_string_value(ref));
        if (!info->references[i])
            return obi_error_oom(err);
        info->n_references++;
    }
    if (deriver) {
        const char *drv_base;
        r = obi_nix_store_path_parse(json_string_value(deriver), &drv_base, err);
        if (r < 0)
            return obi_error_prefix(err, r, "path info %s: deriver", info->path);
        if (!(info->deriver = strdup(json_string_value(deriver))))
            return obi_error_oom(err);
    }
    if (ca && json_string_value(ca)[0] && !(info->ca = strdup(json_string_value(ca))))
        return obi_error_oom(err);
    r = obi_nix_path_info_validate(info, err);
    if (r < 0)
        return r;
    *out = steal_pointer(&owned);
    return 0;
}

/* ---- the interface ---- */

int obi_nix_path_info_get(obi_nix_path_info_store *store, const char *path, obi_nix_path_info **out,
                          obi_error **err)
{
    return store->ops->get(store, path, out, err);
}

int obi_nix_path_info_get_by_hash(obi_nix_path_info_store *store, const char *hash_part,
                                  obi_nix_path_info **out, obi_error **err)
{
    return store->ops->get_by_hash(store, hash_part, out, err);
}

int obi_nix_path_info_list(obi_nix_path_info_store *store, char ***paths_out, size_t *n_out,
                           obi_error **err)
{
    if (!store->ops->list)
        return obi_error_set(err, -ENOTSUP, "this path-info store cannot list its paths");
    return store->ops->list(store, paths_out, n_out, err);
}

int obi_nix_path_info_put(obi_nix_path_info_store *store, const obi_nix_path_info *info,
                          obi_error **err)
{
    int r = obi_nix_path_info_validate(info, err);
    if (r < 0)
        return r;
    return store->ops->put(store, info, err);
}

void obi_nix_path_info_store_close(obi_nix_path_info_store *store)
{
    if (store)
        store->ops->close(store);
}

/* ---- the directory backend ---- */

typedef struct dir_store {
    obi_nix_path_info_store base;
    char *dir;
} dir_store;

/* Reads the record in file and checks that it describes path. */
static int read_record(const char *file, const char *path, obi_nix_path_info **out, obi_error **err)
{
    cleanup_free char *text = NULL;
    size_t len = 0;
    int r = obi_read_file(file, PATH_INFO_MAX_SIZE, &text, &len, err);
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

static int dir_get(obi_nix_path_info_store *store, const char *path, obi_nix_path_info **out,
                   obi_error **err)
{
    dir_store *s = (dir_store *)store;
    const char *base;
    int r = obi_nix_store_path_parse(path, &base, err);
    if (r < 0)
        return r;
    cleanup_free char *file = NULL;
    if (asprintf(&file, "%s/%s.json", s->dir, base) < 0)
        return obi_error_oom(err);
    return read_record(file, path, out, err);
}

static int check_hash_part(const char *hash_part, obi_error **err)
{
    uint8_t digest[20];
    cleanup_error obi_error *decode_err = NULL;
    if (strlen(hash_part) != OBI_NIX_HASH_PART_LEN ||
        obi_nixbase32_decode(hash_part, OBI_NIX_HASH_PART_LEN, digest, sizeof digest, &decode_err) <
            0)
        return obi_error_set(err, -EINVAL, "'%s' is not the hash part of a store path", hash_part);
    return 0;
}

static int dir_get_by_hash(obi_nix_path_info_store *store, const char *hash_part,
                           obi_nix_path_info **out, obi_error **err)
{
    dir_store *s = (dir_store *)store;
    int r = check_hash_part(hash_part, err);
    if (r < 0)
        return r;
    cleanup_free char *link = obi_path_join(s->dir, hash_part);
    if (!link)
        return obi_error_oom(err);
    char target[NAME_MAX + 1];
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 0)
        return obi_error_set_errno(err, errno, "path info %s", link);
    target[n] = '\0';
    /* <hash part>-<name>.json, nothing else: the link is ours, but a path is built from it */
    size_t len = (size_t)n;
    if (len <= 5 || strcmp(target + len - 5, ".json") != 0 ||
        strncmp(target, hash_part, OBI_NIX_HASH_PART_LEN) != 0 || strchr(target, '/'))
        return obi_error_set(err, -EINVAL, "path info %s: points to '%s'", link, target);
    target[len - 5] = '\0';
    cleanup_free char *path = NULL;
    if (asprintf(&path, OBI_NIX_STORE_DIR "/%s", target) < 0)
        return obi_error_oom(err);
    return dir_get(store, path, out, err);
}

/* Points <dir>/<hash part> at <basename>.json, replacing an older link atomically. */
static int dir_link_hash(dir_store *s, const char *base, obi_error **err)
{
    cleanup_free char *target = NULL, *link = NULL;
    if (asprintf(&target, "%s.json", base) < 0 ||
        asprintf(&link, "%s/%.*s", s->dir, OBI_NIX_HASH_PART_LEN, base) < 0)
        return obi_error_oom(err);
    for (unsigned attempt = 0; attempt < 100; attempt++) {
        cleanup_free char *tmp = NULL;
        if (asprintf(&tmp, "%s.lnk.%ld.%u", link, (long)getpid(), attempt) < 0)
            return obi_error_oom(err);
        if (symlink(target, tmp) < 0) {
            if (errno == EEXIST)
                continue;
            return obi_error_set_errno(err, errno, "path info: symlink %s", tmp);
        }
        if (rename(tmp, link) < 0) {
            int e = errno;
            unlink(tmp);
            return obi_error_set_errno(err, e, "path info: rename %s", tmp);
        }
        return 0;
    }
    return obi_error_set(err, -EEXIST, "path info: no free temporary name for %s", link);
}

static int dir_put(obi_nix_path_info_store *store, const obi_nix_path_info *info, obi_error **err)
{
    dir_store *s = (dir_store *)store;
    const char *base = strrchr(info->path, '/') + 1;
    cleanup_free char *file = NULL;
    if (asprintf(&file, "%s/%s.json", s->dir, base) < 0)
        return obi_error_oom(err);
    cleanup_json json_t *json = obi_nix_path_info_to_json(info);
    cleanup_free char *text = json ? json_dumps(json, JSON_SORT_KEYS) : NULL;
    if (!text)
        return obi_error_set(err, -ENOMEM, "path info %s: cannot encode", info->path);
    int r = obi_write_file_atomic(file, text, strlen(text), 0644, err);
    if (r >= 0)
        r = dir_link_hash(s, base, err);
    return r;
}

/* realisations: <dir>/realisations/<drv basename>!<output>, the path and a newline */

static int realisation_file(const dir_store *s, const char *drv_path, const char *output,
                            char **file_out, obi_error **err)
{
    const char *base;
    int r = obi_nix_store_path_parse(drv_path, &base, err);
    if (r < 0)
        return r;
    cleanup_error obi_error *name_err = NULL;
    if (obi_name_validate((const uint8_t *)output, strlen(output), "output name", &name_err) < 0)
        return obi_error_set(err, -EINVAL, "realisation of %s: %s", drv_path, name_err->message);
    char *file = NULL;
    if (asprintf(&file, "%s/realisations/%s!%s", s->dir, base, output) < 0)
        return obi_error_oom(err);
    *file_out = file;
    return 0;
}

static int dir_realisation_get(obi_nix_path_info_store *store, const char *drv_path,
                               const char *output, char **path_out, obi_error **err)
{
    cleanup_free char *file = NULL;
    int r = realisation_file((const dir_store *)store, drv_path, output, &file, err);
    if (r < 0)
        return r;
    cleanup_free char *text = NULL;
    size_t len = 0;
    r = obi_read_file(file, PATH_INFO_MAX_SIZE, &text, &len, err);
    if (r < 0)
        return r;
    while (len > 0 && text[len - 1] == '\n')
        text[--len] = '\0';
    const char *base;
    r = obi_nix_store_path_parse(text, &base, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", file);
    *path_out = steal_pointer(&text);
    return 0;
}

static int dir_realisation_put(obi_nix_path_info_store *store, const char *drv_path,
                               const char *output, const char *path, obi_error **err)
{
    const dir_store *s = (const dir_store *)store;
    cleanup_free char *file = NULL;
    int r = realisation_file(s, drv_path, output, &file, err);
    if (r < 0)
        return r;
    cleanup_free char *dir = NULL;
    if (asprintf(&dir, "%s/realisations", s->dir) < 0)
        return obi_error_oom(err);
    if ((r = obi_mkdir_p(dir, 0755, err)) < 0)
        return r;
    cleanup_free char *text = NULL;
    if (asprintf(&text, "%s\n", path) < 0)
        return obi_error_oom(err);
    return obi_write_file_atomic(file, text, strlen(text), 0644, err);
}

/* The records: <hash part>-<name>.json (the hash links, named by the hash part alone, and the
 * dot-files of a put in progress are left out). */
static int dir_list(obi_nix_path_info_store *store, char ***paths_out, size_t *n_out,
                    obi_error **err)
{
    dir_store *s = (dir_store *)store;
    DIR *dir = opendir(s->dir);
    if (!dir)
        return obi_error_set_errno(err, errno, "path info store %s", s->dir);
    cleanup_strv_builder obi_strv_builder paths = {0};
    int r = 0;
    const struct dirent *entry;
    while (r >= 0 && (entry = readdir(dir))) {
        size_t len = strlen(entry->d_name);
        if (entry->d_name[0] == '.' || len <= OBI_NIX_HASH_PART_LEN + 1 + 5 ||
            strcmp(entry->d_name + len - 5, ".json") != 0 ||
            entry->d_name[OBI_NIX_HASH_PART_LEN] != '-')
            continue;
        cleanup_free char *path = NULL;
        if (asprintf(&path, "%s/%.*s", OBI_NIX_STORE_DIR, (int)(len - 5), entry->d_name) < 0 ||
            obi_strv_builder_add(&paths, path) < 0)
            r = obi_error_oom(err);
    }
    closedir(dir);
    if (r < 0)
        return r;
    obi_strv_builder_sort_unique(&paths);
    char **sorted = obi_strv_builder_steal(&paths, n_out);
    if (!sorted)
        return obi_error_oom(err);
    *paths_out = sorted;
    return 0;
}

static void dir_close(obi_nix_path_info_store *store)
{
    dir_store *s = (dir_store *)store;
    free(s->dir);
    free(s);
}

static const struct obi_nix_path_info_store_ops dir_ops = {
    .get = dir_get,
    .get_by_hash = dir_get_by_hash,
    .put = dir_put,
    .realisation_get = dir_realisation_get,
    .realisation_put = dir_realisation_put,
    .close = dir_close,
    .list = dir_list,
};

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
    dir_store *s = calloc(1, sizeof *s);
    if (!s)
        return obi_error_oom(err);
    s->base.ops = &dir_ops;
    s->dir = steal_pointer(&chosen);
    *out = &s->base;
    return 0;
}

/* ---- selection by URL ---- */

typedef struct path_info_scheme {
    char *scheme;
    obi_nix_path_info_store_factory factory;
} path_info_scheme;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static path_info_scheme *registered;
static size_t n_registered, cap_registered;

int obi_nix_path_info_register_scheme(const char *scheme, obi_nix_path_info_store_factory factory)
{
    if (strcmp(scheme, "") == 0 || strcmp(scheme, "file") == 0)
        return -EEXIST;
    int r = 0;
    pthread_mutex_lock(&registry_lock);
    size_t i = 0;
    while (i < n_registered && strcmp(registered[i].scheme, scheme) != 0)
        i++;
    if (i == n_registered) {
        char *name = strdup(scheme);
        if (!name || obi_array_grow(&registered, &cap_registered, n_registered + 1) < 0) {
            free(name);
            r = -ENOMEM;
        } else {
            registered[n_registered++] = (path_info_scheme){name, factory};
        }
    } else {
        registered[i].factory = factory;
    }
    pthread_mutex_unlock(&registry_lock);
    return r;
}

int obi_nix_path_info_store_open_url(const char *url, obi_nix_path_info_store **out,
                                     obi_error **err)
{
    if (!url)
        return obi_nix_path_info_store_open(NULL, out, err);
    cleanup_url obi_url *parsed = NULL;
    int r = obi_url_parse(url, &parsed, err);
    if (r < 0)
        return obi_error_prefix(err, r, "path info store URL");
    if (parsed->scheme[0] == '\0' || strcmp(parsed->scheme, "file") == 0) {
        if (parsed->path[0] != '/')
            return obi_error_set(err, -EINVAL,
                                 "path info store URL '%s': the directory must be absolute", url);
        return obi_nix_path_info_store_open(parsed->path, out, err);
    }
    obi_nix_path_info_store_factory factory = NULL;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < n_registered && !factory; i++)
        if (strcmp(registered[i].scheme, parsed->scheme) == 0)
            factory = registered[i].factory;
    pthread_mutex_unlock(&registry_lock);
    if (!factory)
        return obi_error_set(err, -EINVAL,
                             "path info store URL '%s': unsupported scheme '%s://' (supported: a "
                             "directory, file:///dir, and the grpc+ schemes of a daemon)",
                             url, parsed->scheme);
    return factory(parsed, out, err);
}

/* ---- realisations ---- */

int obi_nix_realisation_get(obi_nix_path_info_store *store, const char *drv_path,
                            const char *output, char **path_out, obi_error **err)
{
    if (!store->ops->realisation_get)
        return obi_error_set(err, -ENOTSUP, "realisation of %s!%s: this path-info store keeps none",
                             drv_path, output);
    return store->ops->realisation_get(store, drv_path, output, path_out, err);
}

int obi_nix_realisation_put(obi_nix_path_info_store *store, const char *drv_path,
                            const char *output, const char *path, obi_error **err)
{
    if (!store->ops->realisation_put)
        return obi_error_set(err, -ENOTSUP, "realisation of %s!%s: this path-info store keeps none",
                             drv_path, output);
    return store->ops->realisation_put(store, drv_path, output, path, err);
}

int obi_nix_path_info_record(obi_store *castore, obi_nix_path_info_store *store,
                             const obi_nix_path_info *info, obi_error **err)
{
    if (castore->local_root) {
        cleanup_free char *name = NULL;
        if (asprintf(&name, "nix/%s", strrchr(info->path, '/') + 1) < 0)
            return obi_error_oom(err);
        int r = obi_store_root_add(castore, name, &info->node, 1, err);
        if (r < 0)
            return r;
    }
    return obi_nix_path_info_put(store, info, err);
}
