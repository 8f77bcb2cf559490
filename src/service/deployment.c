/*
 * Deployment documents: YAML (libyaml's document API) -> obi_deployment, validated against
 * spec/service.md. The walker is table-driven where it can be (allowed keys per mapping, the
 * capability names; memory strings parse with number.h's unit table); every error names the
 * source line:column, the dotted path of the key ("services.web.resources.memory") and what is
 * wrong with it. Capability names are normalised with oci_defaults.h's table.
 * service_spec.c turns a parsed service into an OCI config; secrets.c resolves its env.
 */
#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/deployment.h"
#include "ocibuild/fs.h"
#include "ocibuild/number.h"
#include "ocibuild/oci_defaults.h"

#define DEPLOYMENT_MAX_BYTES (16u << 20)
#define MAX_REPLICAS 1024
#define MAX_GPUS 64

/* ---- the document walker ----------------------------------------------------------------- */

typedef struct walker {
    yaml_document_t *doc;
    const char *source;
    obi_error **err;
    const char *base_dir; /* the YAML file's directory (absolute); NULL: parsed from text */
} walker;

static int fail_at(walker *w, const yaml_node_t *node, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_at(walker *w, const yaml_node_t *node, const char *path, const char *fmt, ...)
{
    cleanup_free char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return obi_error_oom(w->err);
    return obi_error_set(w->err, -EINVAL, "%s:%zu:%zu: %s: %s", w->source,
                         node ? (size_t)node->start_mark.line + 1 : 0,
                         node ? (size_t)node->start_mark.column + 1 : 0, path, msg);
}
#ifdef __clang_analyzer__
/* Variadic, fail_at is not inlined by the static analyzer: tell it the result is negative. */
#define fail_at(...) obi_error_negative(fail_at(__VA_ARGS__))
#endif

static yaml_node_t *node_get(walker *w, int index)
{
    return yaml_document_get_node(w->doc, index);
}

static const char *scalar_text(const yaml_node_t *node)
{
    return node && node->type == YAML_SCALAR_NODE ? (const char *)node->data.scalar.value : NULL;
}

static char *path_child(const char *path, const char *key)
{
    char *out = NULL;
    if (asprintf(&out, "%s%s%s", path, *path ? "." : "", key) < 0)
        return NULL;
    return out;
}

static char *path_index(const char *path, size_t index)
{
    char *out = NULL;
    if (asprintf(&out, "%s[%zu]", path, index) < 0)
        return NULL;
    return out;
}

static const char *node_kind(const yaml_node_t *node)
{
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

/* Checks that node is a mapping whose keys are distinct scalars from allowed (NULL-terminated;
 * allowed == NULL accepts any key). */
static int check_mapping(walker *w, yaml_node_t *node, const char *path, const char *const *allowed)
{
    if (node->type != YAML_MAPPING_NODE)
        return fail_at(w, node, path, "expected a mapping, got %s", node_kind(node));
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = node_get(w, pair->key);
        const char *name = scalar_text(key);
        if (!name)
            return fail_at(w, key, path, "keys must be strings");
        if (allowed) {
            bool known = false;
            for (const char *const *a = allowed; *a && !known; a++)
                known = !strcmp(*a, name);
            if (!known)
                return fail_at(w, key, path, "unknown key \"%s\"", name);
        }
        for (yaml_node_pair_t *prev = node->data.mapping.pairs.start; prev < pair; prev++)
            if (!strcmp(scalar_text(node_get(w, prev->key)), name))
                return fail_at(w, key, path, "duplicate key \"%s\"", name);
    }
    return 0;
}

/* The value of key in map, or NULL. Keys that are not scalars are skipped: map may not have
 * been through check_mapping yet (a storage item is looked at for its type first). */
static yaml_node_t *map_get(walker *w, yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        const char *name = scalar_text(node_get(w, pair->key));
        if (name && !strcmp(name, key))
            return node_get(w, pair->value);
    }
    return NULL;
}

static int get_string(walker *w, yaml_node_t *node, const char *path, char **out)
{
    const char *text = scalar_text(node);
    if (!text)
        return fail_at(w, node, path, "expected a string, got %s", node_kind(node));
    char *copy = strdup(text);
    if (!copy)
        return obi_error_oom(w->err);
    free(*out);
    *out = copy;
    return 0;
}

static int get_nonempty_string(walker *w, yaml_node_t *node, const char *path, char **out)
{
    int r = get_string(w, node, path, out);
    if (r < 0)
        return r;
    if (!**out)
        return fail_at(w, node, path, "must not be empty");
    return 0;
}

static int get_bool(walker *w, yaml_node_t *node, const char *path, bool *out)
{
    const char *text = scalar_text(node);
    if (text && !strcasecmp(text, "true"))
        *out = true;
    else if (text && !strcasecmp(text, "false"))
        *out = false;
    else
        return fail_at(w, node, path, "expected true or false");
    return 0;
}

static int get_uint(walker *w, yaml_node_t *node, const char *path, unsigned long min,
                    unsigned long max, unsigned *out)
{
    const char *text = scalar_text(node);
    if (!text || !isdigit((unsigned char)*text))
        return fail_at(w, node, path, "expected an integer");
    unsigned long long value = 0;
    if (!obi_parse_decimal(text, ULLONG_MAX, &value))
        return fail_at(w, node, path, "expected an integer, got \"%s\"", text);
    if (value < min || value > max)
        return fail_at(w, node, path, "%llu is out of range %lu..%lu", value, min, max);
    *out = (unsigned)value;
    return 0;
}

/* A list of strings (NULL when empty). */
static int get_strv(walker *w, yaml_node_t *node, const char *path, char ***out)
{
    if (node->type != YAML_SEQUENCE_NODE)
        return fail_at(w, node, path, "expected a list of strings, got %s", node_kind(node));
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    cleanup_strv char **list = calloc(n + 1, sizeof *list);
    if (!list)
        return obi_error_oom(w->err);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = node_get(w, node->data.sequence.items.start[i]);
        cleanup_free char *item_path = path_index(path, i);
        int r = get_string(w, item, item_path ? item_path : path, &list[i]);
        if (r < 0)
            return r;
    }
    obi_strv_free(*out);
    *out = n ? steal_pointer(&list) : NULL;
    return 0;
}

static size_t seq_len(const yaml_node_t *node)
{
    return (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
}

static bool path_is_clean_absolute(const char *path)
{
    if (path[0] != '/')
        return false;
    for (const char *p = path; (p = strstr(p, "..")); p += 2)
        if ((p == path || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
            return false;
    return true;
}

static int get_abs_path(walker *w, yaml_node_t *node, const char *path, char **out)
{
    int r = get_nonempty_string(w, node, path, out);
    if (r < 0)
        return r;
    if (!path_is_clean_absolute(*out))
        return fail_at(w, node, path, "\"%s\" must be an absolute path without \"..\"", *out);
    return 0;
}

/* A path on this host: absolute, or relative to the YAML file's directory (as compose reads
 * one), which it is made absolute against; either way without "..". */
static int host_path_from_text(walker *w, yaml_node_t *node, const char *path, char **text)
{
    if ((*text)[0] != '/' && w->base_dir) {
        char *joined = obi_path_join(w->base_dir, *text);
        if (!joined)
            return obi_error_oom(w->err);
        free(*text);
        *text = joined;
    }
    if (!path_is_clean_absolute(*text))
        return fail_at(w, node, path,
                       "\"%s\" must be an absolute path, or one relative to the file, without "
                       "\"..\"",
                       *text);
    return 0;
}

static int get_host_path(walker *w, yaml_node_t *node, const char *path, char **out)
{
    int r = get_nonempty_string(w, node, path, out);
    return r < 0 ? r : host_path_from_text(w, node, path, out);
}

/* [A-Za-z0-9-], first alphanumeric, min..max bytes. */
static bool name_is_valid(const char *name, size_t min, size_t max)
{
    size_t len = strlen(name);
    if (len < min || len > max || !isalnum((unsigned char)name[0]))
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-')
            return false;
    return true;
}

/* ---- service fields ---------------------------------------------------------------------- */

static const char *const SERVICE_KEYS[] = {
    "rtype",        "schedule", "image",   "command",      "env",
    "resources",    "devices",  "storage", "capabilities", "privileged",
    "host_network", "hostname", "scale",   "depends",      NULL,
};

static int parse_image(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"name", "rootfs", NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    yaml_node_t *name = map_get(w, node, "name");
    yaml_node_t *rootfs = map_get(w, node, "rootfs");
    if (!!name == !!rootfs)
        return fail_at(w, node, path, "exactly one of \"name\" and \"rootfs\" is required");
    cleanup_free char *sub = path_child(path, name ? "name" : "rootfs");
    if (!sub)
        return obi_error_oom(w->err);
    if (rootfs) {
        svc->image_kind = OBI_IMAGE_ROOTFS;
        return get_host_path(w, rootfs, sub, &svc->image_rootfs);
    }
    cleanup_free char *ref = NULL;
    r = get_nonempty_string(w, name, sub, &ref);
    if (r < 0)
        return r;
    if (strncmp(ref, "oci:", 4))
        return fail_at(w, name, sub,
                       "\"%s\" is not an OCI image layout reference (expected oci:PATH[:TAG])",
                       ref);
    char *layout = ref + 4;
    char *slash = strrchr(layout, '/');
    char *colon = strrchr(layout, ':');
    if (colon && (!slash || colon > slash)) {
        *colon = '\0';
        if (!colon[1])
            return fail_at(w, name, sub, "empty tag in \"%s:\"", ref);
        svc->image_tag = strdup(colon + 1);
        if (!svc->image_tag)
            return obi_error_oom(w->err);
    }
    svc->image_path = strdup(layout);
    if (!svc->image_path)
        return obi_error_oom(w->err);
    r = host_path_from_text(w, name, sub, &svc->image_path);
    if (r < 0)
        return r;
    svc->image_kind = OBI_IMAGE_OCI;
    return 0;
}

static int parse_command(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"entrypoint", "args", "workdir", NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    for (const char *const *k = keys; *k; k++) {
        yaml_node_t *value = map_get(w, node, *k);
        if (!value)
            continue;
        cleanup_free char *sub = path_child(path, *k);
        if (!sub)
            return obi_error_oom(w->err);
        if (!strcmp(*k, "entrypoint"))
            r = get_strv(w, value, sub, &svc->entrypoint);
        else if (!strcmp(*k, "args"))
            r = get_strv(w, value, sub, &svc->args);
        else
            r = get_abs_path(w, value, sub, &svc->workdir);
        if (r < 0)
            return r;
    }
    return 0;
}

static bool env_name_is_valid(const char *name)
{
    if (!*name || isdigit((unsigned char)*name))
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-')
            return false;
    return true;
}

static int parse_env(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    int r = check_mapping(w, node, path, NULL);
    if (r < 0)
        return r;
    size_t n = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
    svc->env = calloc(n ? n : 1, sizeof *svc->env);
    if (!svc->env)
        return obi_error_oom(w->err);
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *pair = &node->data.mapping.pairs.start[i];
        yaml_node_t *key = node_get(w, pair->key);
        const char *name = scalar_text(key);
        cleanup_free char *sub = path_child(path, name);
        if (!sub)
            return obi_error_oom(w->err);
        if (!env_name_is_valid(name))
            return fail_at(w, key, sub, "invalid environment variable name");
        obi_service_env_var *var = &svc->env[svc->env_count++];
        var->name = strdup(name);
        if (!var->name)
            return obi_error_oom(w->err);
        r = get_string(w, node_get(w, pair->value), sub, &var->value);
        if (r < 0)
            return r;
    }
    return 0;
}

static int parse_gpu(walker *w, yaml_node_t *node, const char *path, obi_gpu *gpu)
{
    static const char *const keys[] = {"count", "vendor", "distributed", NULL};
    static const char *const dist_keys[] = {"backend", "master_port", NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    gpu->count = 1;
    gpu->vendor = OBI_GPU_NVIDIA;
    yaml_node_t *value;
    cleanup_free char *count_path = path_child(path, "count");
    cleanup_free char *vendor_path = path_child(path, "vendor");
    cleanup_free char *dist_path = path_child(path, "distributed");
    if (!count_path || !vendor_path || !dist_path)
        return obi_error_oom(w->err);
    if ((value = map_get(w, node, "count")) &&
        (r = get_uint(w, value, count_path, 1, MAX_GPUS, &gpu->count)) < 0)
        return r;
    if ((value = map_get(w, node, "vendor"))) {
        if ((r = get_nonempty_string(w, value, vendor_path, &gpu->vendor_name)) < 0)
            return r;
        if (!strcasecmp(gpu->vendor_name, "nvidia"))
            gpu->vendor = OBI_GPU_NVIDIA;
        else if (!strcasecmp(gpu->vendor_name, "amd"))
            gpu->vendor = OBI_GPU_AMD;
        else if (!strcasecmp(gpu->vendor_name, "intel"))
            gpu->vendor = OBI_GPU_INTEL;
        else
            gpu->vendor = OBI_GPU_OTHER;
    }
    if (!gpu->vendor_name && !(gpu->vendor_name = strdup("nvidia")))
        return obi_error_oom(w->err);
    yaml_node_t *dist = map_get(w, node, "distributed");
    if (!dist)
        return 0;
    if ((r = check_mapping(w, dist, dist_path, dist_keys)) < 0)
        return r;
    gpu->distributed = true;
    gpu->backend = OBI_GPU_BACKEND_NCCL;
    gpu->master_port = 29500;
    cleanup_free char *backend_path = path_child(dist_path, "backend");
    cleanup_free char *port_path = path_child(dist_path, "master_port");
    if (!backend_path || !port_path)
        return obi_error_oom(w->err);
    if ((value = map_get(w, dist, "backend"))) {
        const char *text = scalar_text(value);
        if (text && !strcmp(text, "nccl"))
            gpu->backend = OBI_GPU_BACKEND_NCCL;
        else if (text && !strcmp(text, "gloo"))
            gpu->backend = OBI_GPU_BACKEND_GLOO;
        else
            return fail_at(w, value, backend_path, "expected nccl or gloo");
    }
    if ((value = map_get(w, dist, "master_port")) &&
        (r = get_uint(w, value, port_path, 1, 65535, &gpu->master_port)) < 0)
        return r;
    return 0;
}

static int parse_memory_node(walker *w, yaml_node_t *node, const char *path, uint64_t *out)
{
    const char *text = scalar_text(node);
    if (!text)
        return fail_at(w, node, path, "expected a memory string like 512Mi");
    cleanup_error obi_error *inner = NULL;
    uint64_t value;
    if (obi_parse_memory(text, &value, &inner) < 0)
        return fail_at(w, node, path, "%s", inner->message);
    if (value == 0)
        return fail_at(w, node, path, "must be greater than 0");
    *out = value;
    return 0;
}

static int parse_resources(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"cpu", "memory", "gpu", NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    cleanup_free char *cpu_path = path_child(path, "cpu");
    cleanup_free char *mem_path = path_child(path, "memory");
    cleanup_free char *gpu_path = path_child(path, "gpu");
    if (!cpu_path || !mem_path || !gpu_path)
        return obi_error_oom(w->err);
    yaml_node_t *value;
    if ((value = map_get(w, node, "cpu"))) {
        const char *text = scalar_text(value);
        char *end = NULL;
        double cpu = text && *text ? strtod(text, &end) : NAN;
        /* The kernel refuses CFS quotas under 1 ms, i.e. below 0.01 cores. */
        if (!end || *end || !isfinite(cpu) || cpu < 0.01 || cpu > 65536)
            return fail_at(w, value, cpu_path, "expected a number of cores from 0.01 to 65536");
        svc->has_cpu = true;
        svc->cpu = cpu;
    }
    if ((value = map_get(w, node, "memory"))) {
        if ((r = parse_memory_node(w, value, mem_path, &svc->memory)) < 0)
            return r;
        svc->has_memory = true;
    }
    if ((value = map_get(w, node, "gpu"))) {
        if ((r = parse_gpu(w, value, gpu_path, &svc->gpu)) < 0)
            return r;
        svc->has_gpu = true;
    }
    return 0;
}

/* Checks that node (at path) is a sequence and allocates a zeroed array of one element_size
 * element per item (at least one, so the array is never NULL); *n_out is the item count. */
static int alloc_for_sequence(walker *w, yaml_node_t *node, const char *path, size_t element_size,
                              void **out, size_t *n_out)
{
    if (node->type != YAML_SEQUENCE_NODE)
        return fail_at(w, node, path, "expected a list, got %s", node_kind(node));
    size_t n = seq_len(node);
    void *array = calloc(n ? n : 1, element_size);
    if (!array)
        return obi_error_oom(w->err);
    *out = array;
    *n_out = n;
    return 0;
}

/* Item i of a sequence and its path "path[i]" (caller frees). */
static int sequence_item(walker *w, yaml_node_t *node, const char *path, size_t i,
                         yaml_node_t **item, char **item_path)
{
    *item = node_get(w, node->data.sequence.items.start[i]);
    *item_path = path_index(path, i);
    return *item_path ? 0 : obi_error_oom(w->err);
}

static int parse_devices(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"path", "read", "write", "mknod", NULL};
    size_t n = 0;
    int r = alloc_for_sequence(w, node, path, sizeof *svc->devices, (void **)&svc->devices, &n);
    for (size_t i = 0; r == 0 && i < n; i++) {
        yaml_node_t *item = NULL;
        cleanup_free char *item_path = NULL;
        if ((r = sequence_item(w, node, path, i, &item, &item_path)) < 0)
            return r;
        r = check_mapping(w, item, item_path, keys);
        if (r < 0)
            return r;
        obi_service_device *dev = &svc->devices[svc->device_count++];
        yaml_node_t *value = map_get(w, item, "path");
        if (!value)
            return fail_at(w, item, item_path, "missing key \"path\"");
        for (const char *const *k = keys; *k; k++) {
            if (!(value = map_get(w, item, *k)))
                continue;
            cleanup_free char *sub = path_child(item_path, *k);
            if (!sub)
                return obi_error_oom(w->err);
            if (!strcmp(*k, "path"))
                r = get_abs_path(w, value, sub, &dev->path);
            else
                r = get_bool(w, value, sub,
                             !strcmp(*k, "read")    ? &dev->read
                             : !strcmp(*k, "write") ? &dev->write
                                                    : &dev->mknod);
            if (r < 0)
                return r;
        }
    }
    return r;
}

static const struct storage_kind {
    const char *name;
    obi_storage_type type;
    const char *const keys[7];
} STORAGE_KINDS[] = {
    {"bind", OBI_STORAGE_BIND, {"type", "source", "target", "readonly", NULL}},
    {"named", OBI_STORAGE_NAMED, {"type", "name", "target", "readonly", NULL}},
    {"anonymous", OBI_STORAGE_ANONYMOUS, {"type", "target", "readonly", NULL}},
    {"tmpfs", OBI_STORAGE_TMPFS, {"type", "target", "size", "mode", NULL}},
    {"s3", OBI_STORAGE_S3, {"type", "bucket", "prefix", "target", "readonly", NULL}},
};

static bool volume_name_is_valid(const char *name)
{
    if (!*name || !isalnum((unsigned char)*name) || strlen(name) > 128)
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-_.", *p))
            return false;
    return true;
}

static int parse_storage_item(walker *w, yaml_node_t *item, const char *item_path, obi_storage *st)
{
    if (item->type != YAML_MAPPING_NODE)
        return fail_at(w, item, item_path, "expected a mapping, got %s", node_kind(item));
    int r = check_mapping(w, item, item_path, NULL); /* string keys, before looking up "type" */
    if (r < 0)
        return r;
    yaml_node_t *type = map_get(w, item, "type");
    cleanup_free char *type_path = path_child(item_path, "type");
    if (!type_path)
        return obi_error_oom(w->err);
    if (!type)
        return fail_at(w, item, item_path, "missing key \"type\"");
    const char *type_name = scalar_text(type);
    const struct storage_kind *kind = NULL;
    for (size_t k = 0; type_name && k < OBI_ARRAY_SIZE(STORAGE_KINDS); k++)
        if (!strcmp(type_name, STORAGE_KINDS[k].name))
            kind = &STORAGE_KINDS[k];
    if (!kind)
        return fail_at(w, type, type_path, "expected bind, named, anonymous, tmpfs or s3");
    r = check_mapping(w, item, item_path, kind->keys);
    if (r < 0)
        return r;
    st->type = kind->type;
    for (const char *const *k = kind->keys + 1; *k; k++) {
        yaml_node_t *value = map_get(w, item, *k);
        if (!value) {
            if (!strcmp(*k, "target") || !strcmp(*k, "source") || !strcmp(*k, "name") ||
                !strcmp(*k, "bucket"))
                return fail_at(w, item, item_path, "missing key \"%s\"", *k);
            continue;
        }
        cleanup_free char *sub = path_child(item_path, *k);
        if (!sub)
            return obi_error_oom(w->err);
        if (!strcmp(*k, "source"))
            r = get_host_path(w, value, sub, &st->source);
        else if (!strcmp(*k, "target"))
            r = get_abs_path(w, value, sub, &st->target);
        else if (!strcmp(*k, "readonly"))
            r = get_bool(w, value, sub, &st->readonly);
        else if (!strcmp(*k, "name") || !strcmp(*k, "bucket")) {
            char **dst = !strcmp(*k, "name") ? &st->name : &st->bucket;
            r = get_nonempty_string(w, value, sub, dst);
            if (r == 0 && !volume_name_is_valid(*dst))
                r = fail_at(w, value, sub,
                            "\"%s\" must be 1..128 of [A-Za-z0-9_.-], first alphanumeric", *dst);
        } else if (!strcmp(*k, "prefix")) {
            r = get_string(w, value, sub, &st->prefix);
            cleanup_free char *as_abs = NULL;
            if (r == 0 && asprintf(&as_abs, "/%s", st->prefix) < 0)
                return obi_error_oom(w->err);
            if (r == 0 && (st->prefix[0] == '/' || !path_is_clean_absolute(as_abs)))
                r = fail_at(w, value, sub, "\"%s\" must be a relative path without \"..\"",
                            st->prefix);
        } else if (!strcmp(*k, "size")) {
            r = parse_memory_node(w, value, sub, &st->size);
            st->has_size = r == 0;
        } else { /* mode */
            const char *text = scalar_text(value);
            char *end = NULL;
            unsigned long mode = text && *text ? strtoul(text, &end, 8) : 0;
            if (!end || *end || mode > 07777 || !isdigit((unsigned char)*text))
                return fail_at(w, value, sub, "expected an octal mode like \"1777\"");
            st->mode = (unsigned)mode;
            st->has_mode = true;
        }
        if (r < 0)
            return r;
    }
    return 0;
}

static int parse_storage(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    size_t n = 0;
    int r = alloc_for_sequence(w, node, path, sizeof *svc->storage, (void **)&svc->storage, &n);
    for (size_t i = 0; r == 0 && i < n; i++) {
        yaml_node_t *item = NULL;
        cleanup_free char *item_path = NULL;
        if ((r = sequence_item(w, node, path, i, &item, &item_path)) < 0)
            return r;
        obi_storage *st = &svc->storage[svc->storage_count++];
        r = parse_storage_item(w, item, item_path, st);
        if (r < 0)
            return r;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(svc->storage[j].target, st->target))
                return fail_at(w, item, item_path, "target \"%s\" is already mounted by %s[%zu]",
                               st->target, path, j);
    }
    return r;
}

static int parse_capabilities(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    cleanup_strv char **names = NULL;
    int r = get_strv(w, node, path, &names);
    if (r < 0)
        return r;
    size_t n = 0;
    while (names && names[n])
        n++;
    svc->capabilities = calloc(n + 1, sizeof *svc->capabilities);
    if (!svc->capabilities)
        return obi_error_oom(w->err);
    svc->has_capabilities = true;
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        const char *cap = obi_capability_normalize(names[i]);
        if (!cap) {
            cleanup_free char *item_path = path_index(path, i);
            return fail_at(w, node_get(w, node->data.sequence.items.start[i]),
                           item_path ? item_path : path, "unknown capability \"%s\"", names[i]);
        }
        bool seen = false;
        for (size_t j = 0; j < out && !seen; j++)
            seen = !strcmp(svc->capabilities[j], cap);
        if (!seen && !(svc->capabilities[out++] = strdup(cap)))
            return obi_error_oom(w->err);
    }
    return 0;
}

static int parse_scale(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"mode", "replicas", NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    cleanup_free char *mode_path = path_child(path, "mode");
    cleanup_free char *rep_path = path_child(path, "replicas");
    if (!mode_path || !rep_path)
        return obi_error_oom(w->err);
    yaml_node_t *value;
    if ((value = map_get(w, node, "mode"))) {
        const char *mode = scalar_text(value);
        if (!mode || strcmp(mode, "fixed"))
            return fail_at(w, value, mode_path, "only \"fixed\" is supported");
    }
    if ((value = map_get(w, node, "replicas")) &&
        (r = get_uint(w, value, rep_path, 1, MAX_REPLICAS, &svc->replicas)) < 0)
        return r;
    return 0;
}

static int parse_depends(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"service", "condition", NULL};
    size_t n = 0;
    int r = alloc_for_sequence(w, node, path, sizeof *svc->depends, (void **)&svc->depends, &n);
    for (size_t i = 0; r == 0 && i < n; i++) {
        yaml_node_t *item = NULL;
        cleanup_free char *item_path = NULL;
        if ((r = sequence_item(w, node, path, i, &item, &item_path)) < 0)
            return r;
        cleanup_free char *svc_path = path_child(item_path, "service");
        cleanup_free char *cond_path = path_child(item_path, "condition");
        if (!cond_path || !svc_path)
            return obi_error_oom(w->err);
        r = check_mapping(w, item, item_path, keys);
        if (r < 0)
            return r;
        obi_dependency *dep = &svc->depends[svc->depend_count++];
        yaml_node_t *value = map_get(w, item, "service");
        if (!value)
            return fail_at(w, item, item_path, "missing key \"service\"");
        if ((r = get_nonempty_string(w, value, svc_path, &dep->service)) < 0)
            return r;
        if ((value = map_get(w, item, "condition"))) {
            if ((r = get_string(w, value, cond_path, &dep->condition)) < 0)
                return r;
            if (strcmp(dep->condition, "started"))
                return fail_at(w, value, cond_path, "only \"started\" is supported");
        } else if (!(dep->condition = strdup("started"))) {
            return obi_error_oom(w->err);
        }
    }
    return r;
}

typedef int (*service_field_fn)(walker *w, yaml_node_t *node, const char *path, obi_service *svc);

static int parse_rtype(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const names[] = {"service", "job", "cron"};
    const char *text = scalar_text(node);
    for (size_t i = 0; text && i < OBI_ARRAY_SIZE(names); i++)
        if (!strcmp(text, names[i])) {
            svc->rtype = (obi_rtype)i;
            return 0;
        }
    return fail_at(w, node, path, "expected service, job or cron");
}

/* A cron expression: a macro (@hourly ..) or 5 or 6 fields (optional seconds) of digits, names
 * (JAN, MON) and the operators * , - / ? L W #. Field ranges are left to the scheduler. */
static bool schedule_is_valid(const char *text)
{
    static const char *const macros[] = {"@yearly", "@annually", "@monthly", "@weekly",
                                         "@daily",  "@midnight", "@hourly"};
    if (text[0] == '@') {
        for (size_t i = 0; i < OBI_ARRAY_SIZE(macros); i++)
            if (!strcmp(text, macros[i]))
                return true;
        return false;
    }
    size_t fields = 0;
    for (const char *p = text; *p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        fields++;
        for (; *p && *p != ' ' && *p != '\t'; p++)
            if (!isalnum((unsigned char)*p) && !strchr("*,-/?LW#", *p))
                return false;
    }
    return fields == 5 || fields == 6;
}

static int parse_schedule(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    int r = get_nonempty_string(w, node, path, &svc->schedule);
    if (r == 0 && !schedule_is_valid(svc->schedule))
        r = fail_at(w, node, path,
                    "\"%s\" is not a cron expression (5 or 6 fields, or @hourly, @daily, ...)",
                    svc->schedule);
    return r;
}

static int parse_privileged(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    return get_bool(w, node, path, &svc->privileged);
}

static int parse_host_network(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    return get_bool(w, node, path, &svc->host_network);
}

static int parse_hostname(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    int r = get_nonempty_string(w, node, path, &svc->hostname);
    if (r < 0)
        return r;
    for (const char *p = svc->hostname; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
            return fail_at(w, node, path, "\"%s\" is not a valid hostname", svc->hostname);
    if (strlen(svc->hostname) > 64)
        return fail_at(w, node, path, "longer than 64 bytes");
    return 0;
}

static const struct service_field {
    const char *key;
    service_field_fn parse;
} SERVICE_FIELDS[] = {
    {"rtype", parse_rtype},
    {"schedule", parse_schedule},
    {"image", parse_image},
    {"command", parse_command},
    {"env", parse_env},
    {"resources", parse_resources},
    {"devices", parse_devices},
    {"storage", parse_storage},
    {"capabilities", parse_capabilities},
    {"privileged", parse_privileged},
    {"host_network", parse_host_network},
    {"hostname", parse_hostname},
    {"scale", parse_scale},
    {"depends", parse_depends},
};

static int parse_service(walker *w, yaml_node_t *key, yaml_node_t *node, obi_service *svc)
{
    const char *name = scalar_text(key);
    cleanup_free char *path = path_child("services", name);
    if (!path)
        return obi_error_oom(w->err);
    if (!name_is_valid(name, 1, 63))
        return fail_at(w, key, path,
                       "service name must be 1..63 of [A-Za-z0-9-], first alphanumeric");
    if (!(svc->name = strdup(name)))
        return obi_error_oom(w->err);
    svc->replicas = 1;
    int r = check_mapping(w, node, path, SERVICE_KEYS);
    if (r < 0)
        return r;
    for (size_t i = 0; i < OBI_ARRAY_SIZE(SERVICE_FIELDS); i++) {
        yaml_node_t *value = map_get(w, node, SERVICE_FIELDS[i].key);
        if (!value)
            continue;
        cleanup_free char *sub = path_child(path, SERVICE_FIELDS[i].key);
        if (!sub)
            return obi_error_oom(w->err);
        if ((r = SERVICE_FIELDS[i].parse(w, value, sub, svc)) < 0)
            return r;
    }
    if (svc->rtype == OBI_RTYPE_CRON && !svc->schedule)
        return fail_at(w, node, path, "rtype cron needs a schedule");
    if (svc->rtype != OBI_RTYPE_CRON && svc->schedule)
        return fail_at(w, map_get(w, node, "schedule"), path,
                       "schedule is only valid with rtype cron");
    return 0;
}

/* Dependencies name existing services, and there is no cycle (checked by depth-first search
 * with colours; the error spells the cycle out). */
static int check_depends(walker *w, yaml_node_t *services, obi_deployment *d)
{
    for (size_t i = 0; i < d->service_count; i++) {
        const obi_service *svc = &d->services[i];
        for (size_t j = 0; j < svc->depend_count; j++)
            if (!obi_deployment_find(d, svc->depends[j].service)) {
                cleanup_free char *path = NULL;
                if (asprintf(&path, "services.%s.depends[%zu].service", svc->name, j) < 0)
                    return obi_error_oom(w->err);
                return fail_at(w, node_get(w, services->data.mapping.pairs.start[i].value), path,
                               "unknown service \"%s\"", svc->depends[j].service);
            }
    }
    const obi_service **order = NULL;
    int r = obi_deployment_start_order(d, &order, w->err);
    free(order);
    return r;
}

static int parse_root(walker *w, yaml_node_t *root, obi_deployment *d)
{
    static const char *const keys[] = {"version", "deployment", "services", NULL};
    int r = check_mapping(w, root, "(document)", keys);
    if (r < 0)
        return r;
    yaml_node_t *version = map_get(w, root, "version");
    yaml_node_t *name = map_get(w, root, "deployment");
    yaml_node_t *services = map_get(w, root, "services");
    if (!version)
        return fail_at(w, root, "version", "missing (expected \"v1\")");
    if (!scalar_text(version) || strcmp(scalar_text(version), "v1"))
        return fail_at(w, version, "version", "expected \"v1\"");
    if (!name)
        return fail_at(w, root, "deployment", "missing");
    if ((r = get_string(w, name, "deployment", &d->name)) < 0)
        return r;
    if (!name_is_valid(d->name, 3, 63))
        return fail_at(w, name, "deployment",
                       "\"%s\" must be 3..63 of [A-Za-z0-9-], first alphanumeric", d->name);
    if (!services)
        return fail_at(w, root, "services", "missing");
    if ((r = check_mapping(w, services, "services", NULL)) < 0)
        return r;
    size_t n = (size_t)(services->data.mapping.pairs.top - services->data.mapping.pairs.start);
    if (n == 0)
        return fail_at(w, services, "services", "at least one service is required");
    d->services = calloc(n, sizeof *d->services);
    if (!d->services)
        return obi_error_oom(w->err);
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *pair = &services->data.mapping.pairs.start[i];
        d->service_count++;
        if ((r = parse_service(w, node_get(w, pair->key), node_get(w, pair->value),
                               &d->services[i])) < 0)
            return r;
    }
    return check_depends(w, services, d);
}

static int parse_deployment(const char *text, size_t len, const char *source_name,
                            const char *base_dir, obi_deployment **out, obi_error **err);

int obi_deployment_parse(const char *text, size_t len, const char *source_name,
                         obi_deployment **out, obi_error **err)
{
    return parse_deployment(text, len, source_name, NULL, out, err);
}

static int parse_deployment(const char *text, size_t len, const char *source_name,
                            const char *base_dir, obi_deployment **out, obi_error **err)
{
    const char *source = source_name ? source_name : "<input>";
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return obi_error_oom(err);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    yaml_document_t doc;
    if (!yaml_parser_load(&parser, &doc)) {
        int r = obi_error_set(err, -EINVAL, "%s:%zu:%zu: invalid YAML: %s", source,
                              parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                              parser.problem ? parser.problem : "parse error");
        yaml_parser_delete(&parser);
        return r;
    }
    int r = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    walker w = {&doc, source, err, base_dir};
    obi_deployment *d = calloc(1, sizeof *d);
    if (!d) {
        r = obi_error_oom(err);
    } else if (!root) {
        r = obi_error_set(err, -EINVAL, "%s: empty document", source);
    } else {
        r = parse_root(&w, root, d);
        if (r == 0) {
            yaml_document_t next;
            if (!yaml_parser_load(&parser, &next)) {
                r = obi_error_set(err, -EINVAL, "%s: invalid YAML after the document", source);
            } else {
                if (yaml_document_get_root_node(&next))
                    r = obi_error_set(err, -EINVAL, "%s: more than one YAML document", source);
                yaml_document_delete(&next);
            }
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (r < 0) {
        obi_deployment_free(d);
        return r;
    }
    *out = d;
    return 0;
}

int obi_deployment_load(const char *path, obi_deployment **out, obi_error **err)
{
    cleanup_free char *text = NULL;
    size_t len = 0;
    int r = obi_read_file(path, DEPLOYMENT_MAX_BYTES, &text, &len, err);
    if (r < 0)
        return r;
    /* Relative host paths in the file are relative to its directory. */
    cleanup_free char *copy = strdup(path);
    if (!copy)
        return obi_error_oom(err);
    cleanup_free char *base_dir = realpath(dirname(copy), NULL);
    if (!base_dir)
        return obi_error_set_errno(err, errno, "%s: its directory", path);
    return parse_deployment(text, len, path, base_dir, out, err);
}

static void service_clear(obi_service *svc)
{
    free(svc->name);
    free(svc->schedule);
    free(svc->image_path);
    free(svc->image_tag);
    free(svc->image_rootfs);
    obi_strv_free(svc->entrypoint);
    obi_strv_free(svc->args);
    free(svc->workdir);
    for (size_t i = 0; i < svc->env_count; i++) {
        free(svc->env[i].name);
        free(svc->env[i].value);
    }
    free(svc->env);
    free(svc->gpu.vendor_name);
    for (size_t i = 0; i < svc->device_count; i++)
        free(svc->devices[i].path);
    free(svc->devices);
    for (size_t i = 0; i < svc->storage_count; i++) {
        obi_storage *st = &svc->storage[i];
        free(st->source);
        free(st->name);
        free(st->bucket);
        free(st->prefix);
        free(st->target);
    }
    free(svc->storage);
    obi_strv_free(svc->capabilities);
    free(svc->hostname);
    for (size_t i = 0; i < svc->depend_count; i++) {
        free(svc->depends[i].service);
        free(svc->depends[i].condition);
    }
    free(svc->depends);
}

void obi_deployment_free(obi_deployment *deployment)
{
    if (!deployment)
        return;
    for (size_t i = 0; i < deployment->service_count; i++)
        service_clear(&deployment->services[i]);
    free(deployment->services);
    free(deployment->name);
    free(deployment);
}

const obi_service *obi_deployment_find(const obi_deployment *deployment, const char *name)
{
    for (size_t i = 0; i < deployment->service_count; i++)
        if (!strcmp(deployment->services[i].name, name))
            return &deployment->services[i];
    return NULL;
}

static size_t service_index(const obi_deployment *d, const char *name)
{
    for (size_t i = 0; i < d->service_count; i++)
        if (!strcmp(d->services[i].name, name))
            return i;
    return d->service_count;
}

enum { WHITE, GREY, BLACK };

/* Depth-first post-order; on a back edge, writes the cycle (from the grey service) to err. */
static int visit(const obi_deployment *d, size_t i, unsigned char *colour, size_t *stack,
                 size_t depth, const obi_service **order, size_t *n, obi_error **err)
{
    if (colour[i] == BLACK)
        return 0;
    stack[depth] = i;
    if (colour[i] == GREY) {
        obi_buf cycle = OBI_BUF_INIT;
        size_t start = 0;
        while (stack[start] != i)
            start++;
        for (size_t k = start; k <= depth; k++)
            obi_buf_appendf(&cycle, "%s%s", k > start ? " -> " : "", d->services[stack[k]].name);
        int r = obi_error_set(err, -EINVAL, "services.%s.depends: dependency cycle %s",
                              d->services[i].name, cycle.data ? (char *)cycle.data : "");
        obi_buf_free(&cycle);
        return r;
    }
    colour[i] = GREY;
    const obi_service *svc = &d->services[i];
    for (size_t j = 0; j < svc->depend_count; j++) {
        size_t k = service_index(d, svc->depends[j].service);
        if (k == d->service_count)
            return obi_error_set(err, -EINVAL, "services.%s.depends[%zu]: unknown service \"%s\"",
                                 svc->name, j, svc->depends[j].service);
        int r = visit(d, k, colour, stack, depth + 1, order, n, err);
        if (r < 0)
            return r;
    }
    colour[i] = BLACK;
    order[(*n)++] = svc;
    return 0;
}

int obi_deployment_start_order(const obi_deployment *deployment, const obi_service ***out,
                               obi_error **err)
{
    size_t count = deployment->service_count;
    cleanup_free unsigned char *colour = calloc(count ? count : 1, 1);
    cleanup_free size_t *stack = calloc(count + 1, sizeof *stack);
    cleanup_free const obi_service **order = calloc(count ? count : 1, sizeof *order);
    if (!colour || !stack || !order)
        return obi_error_oom(err);
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        int r = visit(deployment, i, colour, stack, 0, order, &n, err);
        if (r < 0)
            return r;
    }
    *out = steal_pointer(&order);
    return 0;
}
