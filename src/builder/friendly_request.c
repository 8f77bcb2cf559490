/*
 * The friendlier request form (see include/ocibuild/friendly_request.h): rewritten into the
 * protobuf JSON form (host paths imported into castore, env values base64-encoded, both sorted)
 * and then decoded by the one BuildRequest JSON decoder, so the two forms cannot drift apart.
 * A regular file whose blob the store already has (the same tool imported for every build) is
 * only hashed, not written again: writing it costs a temp file, a copy and an unlink each time;
 * and once hashed, its digest is remembered by the file's identity (digest_cache.h), so an
 * unchanged file is not even read again.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/blake3.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest_cache.h"
#include "ocibuild/digest.h"
#include "ocibuild/friendly_request.h"
#include "ocibuild/fs.h"
#include "ocibuild/ingest.h"
#include "ocibuild/json_util.h"
#include "ocibuild/strv.h"

/* Keys of a JSON object, sorted bytewise; caller frees the array (not the strings). */
static const char **sorted_keys(const json_t *object, size_t *n_out)
{
    size_t n = json_object_size(object), i = 0;
    const char **keys = calloc(n ? n : 1, sizeof *keys);
    if (!keys)
        return NULL;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)object, key, value)
    {
        (void)value;
        keys[i++] = key;
    }
    qsort(keys, n, sizeof *keys, obi_strv_item_compare);
    *n_out = n;
    return keys;
}

/* Below glibc's mmap threshold, so the buffer comes from the heap: a 1 MiB one was a fresh
 * mapping, page-faulted in on every build (0.6 ms of a trivial build, for a 2 MB busybox). */
#define HASH_READ_SIZE (64 << 10)
/* Bigger files go straight to ingest: a file new to the store is read twice on this path, and
 * that second read is bounded by this size. */
#define HASH_FIRST_MAX_SIZE (64 << 20)

/* If path is a regular file whose blob the store already has, fills *node (named name) from a
 * read-only pass and returns 1; returns 0 when the caller must ingest it (not a regular file, a
 * symlink, unreadable, not in the store yet, or changed while hashed), so ingest keeps the one
 * set of rules and error messages. The node is what ingest would produce: the blob is the
 * file's bytes and executable is the owner-execute bit. */
static int node_if_blob_present(obi_store *store, const char *digest_cache, const char *path,
                                const char *name, obi_node *node)
{
    cleanup_close int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat before, after;
    if (fd < 0 || fstat(fd, &before) < 0 || !S_ISREG(before.st_mode) ||
        before.st_size > HASH_FIRST_MAX_SIZE)
        return 0;
    obi_digest digest;
    cleanup_error obi_error *ignored = NULL;
    /* The same file as before (digest_cache.h): its digest without reading it. */
    if (digest_cache && obi_digest_cache_get(digest_cache, &before, &digest))
        return obi_blob_has(store->blobs, &digest, &ignored) == 1 &&
               obi_node_init_file(node, name, strlen(name), &digest, (uint64_t)before.st_size,
                                  (before.st_mode & S_IXUSR) != 0) == 0;
    cleanup_free uint8_t *buf = malloc(HASH_READ_SIZE);
    if (!buf)
        return 0;
    obi_blake3_hasher hasher;
    obi_blake3_init(&hasher);
    uint64_t size = 0;
    for (;;) {
        ssize_t n = read(fd, buf, HASH_READ_SIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return 0;
        if (n == 0)
            break;
        obi_blake3_update(&hasher, buf, (size_t)n);
        size += (uint64_t)n;
    }
    /* A file written to while hashed: let ingest take it (and report it if it keeps changing). */
    if (fstat(fd, &after) < 0 || size != (uint64_t)after.st_size ||
        after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
        after.st_mtim.tv_nsec != before.st_mtim.tv_nsec ||
        after.st_ctim.tv_sec != before.st_ctim.tv_sec ||
        after.st_ctim.tv_nsec != before.st_ctim.tv_nsec)
        return 0;
    obi_blake3_finalize(&hasher, digest.bytes, sizeof digest.bytes);
    if (digest_cache)
        obi_digest_cache_put(digest_cache, &after, &digest);
    if (obi_blob_has(store->blobs, &digest, &ignored) != 1)
        return 0;
    if (obi_node_init_file(node, name, strlen(name), &digest, size,
                           (after.st_mode & S_IXUSR) != 0) < 0)
        return 0;
    return 1;
}

static int import_inputs(const json_t *inputs, const char *base_dir, obi_store *store,
                         const obi_progress *progress, json_t *out_array, obi_error **err)
{
    size_t n;
    cleanup_free const char **names = sorted_keys(inputs, &n);
    if (!names)
        return obi_error_oom(err);
    cleanup_free char *data_dir = obi_default_data_dir();
    cleanup_free char *digest_cache = data_dir ? obi_path_join(data_dir, "digest-cache") : NULL;
    for (size_t i = 0; i < n; i++) {
        json_t *value = json_object_get(inputs, names[i]);
        if (json_is_object(value)) { /* already a Node */
            json_array_append(out_array, value);
            continue;
        }
        if (!json_is_string(value))
            return obi_error_set(
                err, -EINVAL, "inputs.%s: expected a host path string or a Node object", names[i]);
        const char *host_path = json_string_value(value);
        cleanup_free char *joined = NULL;
        if (host_path[0] != '/' && base_dir) {
            if (!(joined = obi_path_join(base_dir, host_path)))
                return obi_error_oom(err);
            host_path = joined;
        }
        obi_node node;
        if (!node_if_blob_present(store, digest_cache, host_path, names[i], &node)) {
            obi_ingest_options options = {.name = names[i], .progress = progress};
            int r =
                obi_ingest_path(store->blobs, store->directories, host_path, &options, &node, err);
            if (r < 0)
                return obi_error_prefix(err, r, "inputs.%s", names[i]);
        }
        json_t *node_json = obi_node_to_json(&node);
        obi_node_clear(&node);
        if (!node_json || json_array_append_new(out_array, node_json) < 0)
            return obi_error_oom(err);
    }
    return 0;
}

static int convert_env(const json_t *env, json_t *out_array, obi_error **err)
{
    size_t n;
    cleanup_free const char **keys = sorted_keys(env, &n);
    if (!keys)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++) {
        json_t *value = json_object_get(env, keys[i]);
        if (!json_is_string(value))
            return obi_error_set(err, -EINVAL, "env.%s: expected a string", keys[i]);
        size_t len = json_string_length(value);
        cleanup_free char *b64 = malloc(obi_base64_encoded_len(len) + 1);
        if (!b64)
            return obi_error_oom(err);
        obi_base64_encode((const uint8_t *)json_string_value(value), len, b64);
        json_t *entry = json_pack("{s:s, s:s}", "key", keys[i], "value", b64);
        if (!entry || json_array_append_new(out_array, entry) < 0)
            return obi_error_oom(err);
    }
    return 0;
}

static int from_json(const json_t *json, const char *base_dir, obi_store *store,
                     const obi_progress *progress, obi_build_request **out, obi_error **err);

int obi_friendly_request_from_json(const json_t *json, obi_store *store, obi_build_request **out,
                                   obi_error **err)
{
    return from_json(json, NULL, store, NULL, out, err);
}

int obi_friendly_request_from_json_at(const json_t *json, const char *base_dir, obi_store *store,
                                      obi_build_request **out, obi_error **err)
{
    return from_json(json, base_dir, store, NULL, out, err);
}

static int from_json(const json_t *json, const char *base_dir, obi_store *store,
                     const obi_progress *progress, obi_build_request **out, obi_error **err)
{
    if (!json_is_object(json))
        return obi_error_set(err, -EINVAL, "request: expected a JSON object");
    const json_t *inputs = json_object_get(json, "inputs");
    const json_t *env = json_object_get(json, "env");
    if (!json_is_object(inputs) && !env)
        return obi_build_request_from_json(json, out, err);

    cleanup_json json_t *copy = json_deep_copy(json);
    if (!copy)
        return obi_error_oom(err);
    int r;
    if (json_is_object(inputs)) {
        json_t *array = json_array();
        if (!array || json_object_set_new(copy, "inputs", array) < 0)
            return obi_error_oom(err);
        if ((r = import_inputs(inputs, base_dir, store, progress, array, err)) < 0)
            return r;
    }
    if (env) {
        if (!json_is_object(env))
            return obi_error_set(err, -EINVAL, "env: expected an object of strings");
        const char *field =
            json_object_get(copy, "environmentVars") ? "environmentVars" : "environment_vars";
        json_t *array = json_object_get(copy, field);
        if (array && json_array_size(array))
            return obi_error_set(err, -EINVAL, "env: give either env or %s, not both", field);
        array = json_array();
        if (!array || json_object_set_new(copy, field, array) < 0)
            return obi_error_oom(err);
        json_object_del(copy, "env");
        if ((r = convert_env(env, array, err)) < 0)
            return r;
    }
    return obi_build_request_from_json(copy, out, err);
}

int obi_friendly_request_load(const char *path, obi_store *store, const obi_progress *progress,
                              obi_build_request **out, obi_error **err)
{
    json_error_t jerr;
    cleanup_json json_t *json =
        strcmp(path, "-") ? json_load_file(path, 0, &jerr) : json_loadf(stdin, 0, &jerr);
    if (!json)
        return obi_error_set(err, -EINVAL, "%s: line %d column %d: %s", path, jerr.line,
                             jerr.column, jerr.text);
    /* Relative host paths are relative to the request file, wherever it is run from. */
    cleanup_free char *copy = strdup(path);
    if (!copy)
        return obi_error_oom(err);
    const char *base_dir = strcmp(path, "-") ? dirname(copy) : NULL;
    int r = from_json(json, base_dir, store, progress, out, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    return 0;
}
