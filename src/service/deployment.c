/*
 * Deployment documents: YAML (libyaml's document API) -> obi_deployment, validated against
 * spec/service.md and zlayer's format (docs/service.md, "zlayer keys"). The walker is
 * table-driven where it can be (allowed keys per mapping, a parse function per service key,
 * the capability names; memory strings and durations parse with number.h's unit tables); every
 * error names the source line:column, the dotted path of the key
 * ("services.web.resources.memory") and what is wrong with it. Capability names are normalised
 * with oci_defaults.h's table. Keys that mean nothing on one node are checked against zlayer's
 * shape for them (`shape`: data, one table) and become notices (add_notice).
 * service_spec.c turns a parsed service into an OCI config; secrets.c resolves its env.
 */
#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/cron.h"
#include "ocibuild/deployment.h"
#include "ocibuild/fs.h"
#include "ocibuild/number.h"
#include "ocibuild/oci_defaults.h"
#include "ocibuild/signal_name.h"

#define DEPLOYMENT_MAX_BYTES (16u << 20)
#define MAX_REPLICAS 1024
#define MAX_GPUS 64

/* ---- the document walker ----------------------------------------------------------------- */

typedef struct walker {
    yaml_document_t *doc;
    const char *source;
    obi_error **err;
    const char *base_dir; /* the YAML file's directory (absolute); NULL: parsed from text */
    char ***notices;      /* the deployment's notices (keys without effect here) */
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

/* Records that the key at path is accepted without effect here, and why (obi_deployment
 * .notices, printed once by the CLI). */
static int add_notice(walker *w, const char *path, const char *why)
{
    size_t n = 0;
    while (*w->notices && (*w->notices)[n])
        n++;
    char **grown = realloc(*w->notices, (n + 2) * sizeof *grown);
    if (!grown)
        return obi_error_oom(w->err);
    *w->notices = grown;
    grown[n + 1] = NULL;
    if (asprintf(&grown[n], "%s: %s", path, why) < 0) {
        grown[n] = NULL;
        return obi_error_oom(w->err);
    }
    return 0;
}

/* ---- shapes: what zlayer accepts under keys that have no effect here ------------------------
 * A key ocibuild does not act on is still checked the way zlayer checks it (its serde types:
 * closed mappings, enums, integers, durations), so a typo is an error here as it is there. A
 * shape is data: a kind, and for mappings a table of field shapes. */

typedef enum shape_kind {
    SHAPE_ANY,      /* anything (zlayer takes free-form JSON there) */
    SHAPE_STRING,   /* a scalar */
    SHAPE_BOOL,     /* true / false */
    SHAPE_UINT,     /* 0..max */
    SHAPE_DURATION, /* "30s", "1h 30m" */
    SHAPE_MEMORY,   /* "512Mi" */
    SHAPE_ENUM,     /* one of values */
    SHAPE_MAP,      /* a mapping with the keys in fields (closed unless open) */
    SHAPE_DICT,     /* a mapping from any string to fields[0] */
    SHAPE_LIST,     /* a list of fields[0] */
    SHAPE_ONE_OF,   /* the first of fields that fits */
} shape_kind;

typedef struct shape {
    const char *key; /* as a field of a SHAPE_MAP; NULL ends a field table */
    shape_kind kind;
    bool required;
    bool open; /* SHAPE_MAP: unknown keys are fine (zlayer has no deny_unknown_fields there) */
    unsigned long long max;     /* SHAPE_UINT */
    const char *const *values;  /* SHAPE_ENUM, NULL-terminated */
    const struct shape *fields; /* SHAPE_MAP/DICT/LIST/ONE_OF */
} shape;

static const shape STRING_SHAPE = {.kind = SHAPE_STRING};

static int check_shape(walker *w, yaml_node_t *node, const char *path, const shape *sh);

static int check_shape_map(walker *w, yaml_node_t *node, const char *path, const shape *sh)
{
    if (node->type != YAML_MAPPING_NODE)
        return fail_at(w, node, path, "expected a mapping, got %s", node_kind(node));
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = node_get(w, pair->key);
        const char *name = scalar_text(key);
        if (!name)
            return fail_at(w, key, path, "keys must be strings");
        for (yaml_node_pair_t *prev = node->data.mapping.pairs.start; prev < pair; prev++)
            if (!strcmp(scalar_text(node_get(w, prev->key)), name))
                return fail_at(w, key, path, "duplicate key \"%s\"", name);
        const shape *field = NULL;
        if (sh->kind == SHAPE_DICT)
            field = &sh->fields[0];
        for (const shape *f = sh->fields; sh->kind == SHAPE_MAP && f && f->key && !field; f++)
            if (!strcmp(f->key, name))
                field = f;
        if (!field && sh->open)
            continue;
        if (!field)
            return fail_at(w, key, path, "unknown key \"%s\"", name);
        cleanup_free char *sub = path_child(path, name);
        if (!sub)
            return obi_error_oom(w->err);
        int r = check_shape(w, node_get(w, pair->value), sub, field);
        if (r < 0)
            return r;
    }
    for (const shape *f = sh->fields; sh->kind == SHAPE_MAP && f && f->key; f++)
        if (f->required && !map_get(w, node, f->key))
            return fail_at(w, node, path, "missing key \"%s\"", f->key);
    return 0;
}

static int check_shape(walker *w, yaml_node_t *node, const char *path, const shape *sh)
{
    const char *text = scalar_text(node);
    cleanup_error obi_error *inner = NULL;
    uint64_t ignored;
    bool b;
    switch (sh->kind) {
    case SHAPE_ANY:
        return 0;
    case SHAPE_STRING:
        return text ? 0 : fail_at(w, node, path, "expected a string, got %s", node_kind(node));
    case SHAPE_BOOL:
        return get_bool(w, node, path, &b);
    case SHAPE_UINT: {
        unsigned long long value;
        if (!text || !obi_parse_decimal(text, sh->max ? sh->max : UINT32_MAX, &value))
            return fail_at(w, node, path, "expected an integer from 0 to %llu",
                           sh->max ? sh->max : (unsigned long long)UINT32_MAX);
        return 0;
    }
    case SHAPE_DURATION:
        if (!text)
            return fail_at(w, node, path, "expected a duration like 30s");
        return obi_parse_duration(text, &ignored, &inner) < 0
                   ? fail_at(w, node, path, "%s", inner->message)
                   : 0;
    case SHAPE_MEMORY:
        if (!text)
            return fail_at(w, node, path, "expected a memory string like 512Mi");
        return obi_parse_memory(text, &ignored, &inner) < 0
                   ? fail_at(w, node, path, "%s", inner->message)
                   : 0;
    case SHAPE_ENUM: {
        obi_buf names = OBI_BUF_INIT;
        for (const char *const *v = sh->values; *v; v++) {
            if (text && !strcmp(text, *v)) {
                obi_buf_free(&names);
                return 0;
            }
            obi_buf_appendf(&names, "%s%s", v == sh->values ? "" : ", ", *v);
        }
        int r = fail_at(w, node, path, "expected one of %s", names.data ? (char *)names.data : "");
        obi_buf_free(&names);
        return r;
    }
    case SHAPE_MAP:
    case SHAPE_DICT:
        return check_shape_map(w, node, path, sh);
    case SHAPE_LIST:
        if (node->type != YAML_SEQUENCE_NODE)
            return fail_at(w, node, path, "expected a list, got %s", node_kind(node));
        for (size_t i = 0;
             i < (size_t)(node->data.sequence.items.top - node->data.sequence.items.start); i++) {
            cleanup_free char *sub = path_index(path, i);
            if (!sub)
                return obi_error_oom(w->err);
            int r = check_shape(w, node_get(w, node->data.sequence.items.start[i]), sub,
                                &sh->fields[0]);
            if (r < 0)
                return r;
        }
        return 0;
    case SHAPE_ONE_OF: {
        /* alternatives end with {0}; the last one's error is the one reported */
        int r = -EINVAL;
        for (const shape *alt = sh->fields; alt->kind != SHAPE_ANY || alt->key; alt++) {
            if (w->err) {
                obi_error_free(*w->err);
                *w->err = NULL;
            }
            if ((r = check_shape(w, node, path, alt)) == 0)
                return 0;
        }
        return r;
    }
    }
    return 0;
}

/* ---- service fields ---------------------------------------------------------------------- */

/* Every key of a zlayer service. Those in SERVICE_FIELDS (below) mean something here; those in
 * SERVICE_NOOPS are checked for shape and noted. */
static const char *const SERVICE_KEYS[] = {
    "rtype",
    "schedule",
    "image",
    "command",
    "env",
    "resources",
    "devices",
    "storage",
    "capabilities",
    "cap_add",
    "cap_drop",
    "privileged",
    "host_network",
    "network_mode",
    "hostname",
    "scale",
    "depends",
    "health",
    "init",
    "errors",
    "restart_policy",
    "endpoints",
    "port_mappings",
    "ulimits",
    "dns",
    "cgroup_parent",
    "labels",
    "sysctls",
    "user",
    "read_only_root_fs",
    "security_opt",
    "stop_signal",
    "stop_grace_period",
    "lifecycle",
    "extra_hosts",
    "extra_groups",
    "service_type",
    "replica_groups",
    "pid_mode",
    "ipc_mode",
    "userns_mode",
    "init_container",
    /* no effect on one node */
    "network",
    "isolation",
    "node_mode",
    "node_selector",
    "affinity",
    "platform",
    "wasm",
    "wasm_http",
    "logs",
    "tty",
    "stdin_open",
    "overlay",
    "localhost_reachability",
    "expose",
    NULL,
};

static const shape WASM_SHAPE = {
    .kind = SHAPE_MAP,
    .fields =
        (const shape[]){
            {.key = "min_instances", .kind = SHAPE_UINT},
            {.key = "max_instances", .kind = SHAPE_UINT},
            {.key = "idle_timeout", .kind = SHAPE_DURATION},
            {.key = "request_timeout", .kind = SHAPE_DURATION},
            {.key = "max_memory", .kind = SHAPE_MEMORY},
            {.key = "max_fuel", .kind = SHAPE_UINT, .max = UINT64_MAX},
            {.key = "epoch_interval", .kind = SHAPE_DURATION},
            {.key = "capabilities",
             .kind = SHAPE_MAP,
             .fields =
                 (const shape[]){
                     {.key = "config", .kind = SHAPE_BOOL},
                     {.key = "keyvalue", .kind = SHAPE_BOOL},
                     {.key = "logging", .kind = SHAPE_BOOL},
                     {.key = "secrets", .kind = SHAPE_BOOL},
                     {.key = "metrics", .kind = SHAPE_BOOL},
                     {.key = "http_client", .kind = SHAPE_BOOL},
                     {.key = "cli", .kind = SHAPE_BOOL},
                     {.key = "filesystem", .kind = SHAPE_BOOL},
                     {.key = "sockets", .kind = SHAPE_BOOL},
                     {0},
                 }},
            {.key = "allow_http_outgoing", .kind = SHAPE_BOOL},
            {.key = "allowed_hosts", .kind = SHAPE_LIST, .fields = &STRING_SHAPE},
            {.key = "allow_tcp", .kind = SHAPE_BOOL},
            {.key = "allow_udp", .kind = SHAPE_BOOL},
            {.key = "preopens",
             .kind = SHAPE_LIST,
             .fields =
                 (const shape[]){
                     {.kind = SHAPE_MAP,
                      .fields =
                          (const shape[]){
                              {.key = "source", .kind = SHAPE_STRING, .required = true},
                              {.key = "target", .kind = SHAPE_STRING, .required = true},
                              {.key = "readonly", .kind = SHAPE_BOOL},
                              {0},
                          }},
                 }},
            {.key = "kv_enabled", .kind = SHAPE_BOOL},
            {.key = "kv_namespace", .kind = SHAPE_STRING},
            {.key = "kv_max_value_size", .kind = SHAPE_UINT, .max = UINT64_MAX},
            {.key = "secrets", .kind = SHAPE_LIST, .fields = &STRING_SHAPE},
            {.key = "precompile", .kind = SHAPE_BOOL},
            {0},
        },
};

#define WHY_PLACEMENT                                                                              \
    "placement across a cluster's nodes; ocibuild runs a deployment on one node, ignored"

/* Service keys without effect on one node: the shape zlayer checks, and why (NULL: zlayer
 * itself treats the key as documentation; accepted without a notice). */
static const struct noop_key {
    const char *key;
    const shape *sh;
    const char *why;
} SERVICE_NOOPS[] = {
    {"network",
     &(const shape){
         .kind = SHAPE_MAP,
         .fields =
             (const shape[]){
                 {.key = "overlays",
                  .kind = SHAPE_MAP,
                  .fields =
                      (const shape[]){
                          {.key = "service",
                           .kind = SHAPE_MAP,
                           .fields = (const shape[]){{.key = "enabled", .kind = SHAPE_BOOL},
                                                     {.key = "encrypted", .kind = SHAPE_BOOL},
                                                     {.key = "isolated", .kind = SHAPE_BOOL},
                                                     {0}}},
                          {.key = "global",
                           .kind = SHAPE_MAP,
                           .fields = (const shape[]){{.key = "enabled", .kind = SHAPE_BOOL},
                                                     {.key = "encrypted", .kind = SHAPE_BOOL},
                                                     {.key = "isolated", .kind = SHAPE_BOOL},
                                                     {0}}},
                          {0},
                      }},
                 {.key = "join",
                  .kind = SHAPE_MAP,
                  .fields =
                      (const shape[]){
                          {.key = "mode",
                           .kind = SHAPE_ENUM,
                           .values = (const char *const[]){"open", "token", "closed", NULL}},
                          {.key = "scope",
                           .kind = SHAPE_ENUM,
                           .values = (const char *const[]){"service", "global", NULL}},
                          {0},
                      }},
                 {0},
             }},
     "zlayer's encrypted overlays and join policy between nodes; one node here, ignored"},
    {"isolation",
     &(const shape){.kind = SHAPE_ENUM,
                    .values = (const char *const[]){"auto", "process", "hyperv", NULL}},
     "Windows container isolation; ignored on Linux (as zlayer does)"},
    {"node_mode",
     &(const shape){.kind = SHAPE_ENUM,
                    .values = (const char *const[]){"shared", "dedicated", "exclusive", NULL}},
     WHY_PLACEMENT},
    {"node_selector",
     &(const shape){.kind = SHAPE_MAP,
                    .fields =
                        (const shape[]){
                            {.key = "labels", .kind = SHAPE_DICT, .fields = &STRING_SHAPE},
                            {.key = "prefer_labels", .kind = SHAPE_DICT, .fields = &STRING_SHAPE},
                            {0},
                        }},
     WHY_PLACEMENT},
    {"affinity",
     &(const shape){
         .kind = SHAPE_ONE_OF,
         .fields =
             (const shape[]){
                 {.kind = SHAPE_ENUM, .values = (const char *const[]){"spread", "pack", NULL}},
                 {.kind = SHAPE_MAP,
                  .fields =
                      (const shape[]){{.key = "pin", .kind = SHAPE_STRING, .required = true}, {0}}},
                 {0},
             }},
     WHY_PLACEMENT},
    {"platform",
     &(const shape){.kind = SHAPE_MAP,
                    .fields =
                        (const shape[]){
                            {.key = "os",
                             .kind = SHAPE_ENUM,
                             .required = true,
                             .values = (const char *const[]){"linux", "windows", "macos", NULL}},
                            {.key = "arch",
                             .kind = SHAPE_ENUM,
                             .required = true,
                             .values = (const char *const[]){"amd64", "arm64", NULL}},
                            {.key = "osVersion", .kind = SHAPE_STRING},
                            {0},
                        }},
     "which agents zlayer may place the service on; ocibuild runs it here, ignored"},
    {"wasm", &WASM_SHAPE, "WASM settings; ocibuild runs no WASM services, ignored"},
    {"wasm_http", &WASM_SHAPE, "WASM settings; ocibuild runs no WASM services, ignored"},
    {"logs",
     &(const shape){.kind = SHAPE_MAP,
                    .fields =
                        (const shape[]){
                            {.key = "destination", .kind = SHAPE_STRING},
                            {.key = "max_size_bytes", .kind = SHAPE_UINT, .max = UINT64_MAX},
                            {.key = "retention_secs", .kind = SHAPE_UINT, .max = UINT64_MAX},
                            {0},
                        }},
     "zlayer's log store; here each replica logs to DATA/services/DEPLOYMENT/ID/log, ignored"},
    {"tty", &(const shape){.kind = SHAPE_BOOL},
     "replicas run detached with their output in a timestamped log, no terminal (a terminal "
     "would need a console socket the supervisor holds for the replica's life), ignored"},
    {"stdin_open", &(const shape){.kind = SHAPE_BOOL},
     "replicas run detached with their output in a timestamped log; nothing is attached to "
     "their stdin (it is /dev/null), ignored"},
    {"overlay",
     &(const shape){.kind = SHAPE_MAP,
                    .fields =
                        (const shape[]){
                            {.key = "mode",
                             .kind = SHAPE_ENUM,
                             .values = (const char *const[]){"auto", "shared", "dedicated", NULL}},
                            {.key = "parent", .kind = SHAPE_STRING},
                            {0},
                        }},
     "zlayer's WireGuard overlay between nodes; one node here, ignored"},
    {"localhost_reachability",
     &(const shape){.kind = SHAPE_ENUM,
                    .values = (const char *const[]){"auto", "always", "never", NULL}},
     "publishing on the node's loopback is the service network's, which does not read it, "
     "ignored"},
    {"expose", &(const shape){.kind = SHAPE_LIST, .fields = &STRING_SHAPE}, NULL},
};

static const shape SOURCE_POLICY_SHAPE = {
    .kind = SHAPE_ENUM,
    .values = (const char *const[]){"local_first", "s3_first", "remote_only", "local_only", NULL},
};

/* image.pull_policy: zlayer's four, if_not_present when not written (what registry.h does with
 * each is the registry's). */
static int parse_pull_policy(walker *w, yaml_node_t *image, const char *path, obi_service *svc)
{
    yaml_node_t *value = map_get(w, image, "pull_policy");
    svc->image_pull_policy = OBI_PULL_IF_NOT_PRESENT;
    if (!value)
        return 0;
    cleanup_free char *sub = path_child(path, "pull_policy");
    if (!sub)
        return obi_error_oom(w->err);
    const char *text = scalar_text(value);
    if (!text || obi_pull_policy_parse(text, &svc->image_pull_policy) < 0)
        return fail_at(w, value, sub, "expected always, if_not_present, never or newer");
    return 0;
}

/* image.source_policy: the order of zlayer's image sources (local store, cache, S3 tier,
 * registry); ocibuild has its cache and the registry, no S3 tier: checked, a notice. */
static int parse_source_policy(walker *w, yaml_node_t *image, const char *path)
{
    yaml_node_t *value = map_get(w, image, "source_policy");
    if (!value)
        return 0;
    cleanup_free char *sub = path_child(path, "source_policy");
    if (!sub)
        return obi_error_oom(w->err);
    int r = check_shape(w, value, sub, &SOURCE_POLICY_SHAPE);
    return r < 0 ? r
                 : add_notice(w, sub,
                              "the order of zlayer's image sources (local, S3 tier, registry); "
                              "ocibuild has its local cache and the registry, no S3 tier, ignored");
}

/* A registry reference (anything that is not "oci:..."): parsed now (image_ref.h), so a
 * malformed one is an error of the document that names the key. */
static int parse_image_ref(walker *w, yaml_node_t *node, const char *path, const char *text,
                           obi_service *svc)
{
    cleanup_error obi_error *ref_err = NULL;
    if (obi_image_ref_parse(text, &svc->image_ref, &ref_err) < 0)
        return fail_at(w, node, path, "%s", ref_err->message);
    svc->image_kind = OBI_IMAGE_REGISTRY;
    return 0;
}

/* image: REF, or {name: REF | oci:PATH[:TAG], pull_policy, source_policy} or {rootfs: DIR}. */
static int parse_image(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    svc->image_pull_policy = OBI_PULL_IF_NOT_PRESENT;
    if (node->type == YAML_SCALAR_NODE) {
        cleanup_free char *text = NULL;
        int r = get_nonempty_string(w, node, path, &text);
        if (r == 0 && !strncmp(text, "oci:", 4))
            return fail_at(w, node, path, "an OCI layout is written {name: \"%s\"}", text);
        return r < 0 ? r : parse_image_ref(w, node, path, text, svc);
    }
    static const char *const keys[] = {"name", "rootfs", "pull_policy", "source_policy", NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    yaml_node_t *name = map_get(w, node, "name");
    yaml_node_t *rootfs = map_get(w, node, "rootfs");
    if (!!name == !!rootfs)
        return fail_at(w, node, path, "exactly one of \"name\" and \"rootfs\" is required");
    if ((r = parse_pull_policy(w, node, path, svc)) < 0 ||
        (r = parse_source_policy(w, node, path)) < 0)
        return r;
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
        return parse_image_ref(w, name, sub, ref, svc);
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

static const shape GPU_SCHEDULING_SHAPE = {
    .kind = SHAPE_ENUM,
    .values = (const char *const[]){"best-effort", "gang", "spread", NULL},
};
static int parse_gpu_distributed(walker *w, yaml_node_t *dist, const char *dist_path, obi_gpu *gpu)
{
    static const char *const dist_keys[] = {"backend", "master_port", NULL};
    int r = check_mapping(w, dist, dist_path, dist_keys);
    if (r < 0)
        return r;
    gpu->distributed = true;
    gpu->backend = OBI_GPU_BACKEND_NCCL;
    gpu->master_port = 29500;
    cleanup_free char *backend_path = path_child(dist_path, "backend");
    cleanup_free char *port_path = path_child(dist_path, "master_port");
    if (!backend_path || !port_path)
        return obi_error_oom(w->err);
    yaml_node_t *value;
    if ((value = map_get(w, dist, "backend"))) {
        static const char *const names[] = {"nccl", "gloo", "mpi"};
        const char *text = scalar_text(value);
        size_t i = 0;
        while (i < OBI_ARRAY_SIZE(names) && !(text && !strcmp(text, names[i])))
            i++;
        if (i == OBI_ARRAY_SIZE(names))
            return fail_at(w, value, backend_path, "expected nccl, gloo or mpi");
        gpu->backend = (obi_gpu_backend)i;
    }
    if ((value = map_get(w, dist, "master_port")) &&
        (r = get_uint(w, value, port_path, 1, 65535, &gpu->master_port)) < 0)
        return r;
    return 0;
}

/* sharing: exclusive (the default), mps (its pipe and log dirs, host paths), time-slice (a slice
 * index and a config file); the MPS and time-slice keys are refused with other modes, where
 * zlayer would silently not look at them. */
static int parse_gpu_sharing(walker *w, yaml_node_t *node, const char *path, obi_gpu *gpu)
{
    static const char *const modes[] = {"exclusive", "mps", "time-slice"};
    static const struct {
        const char *key;
        obi_gpu_sharing mode;
    } mode_keys[] = {
        {"mps_pipe_dir", OBI_GPU_SHARING_MPS},
        {"mps_log_dir", OBI_GPU_SHARING_MPS},
        {"time_slice_index", OBI_GPU_SHARING_TIME_SLICE},
        {"time_slicing_config_path", OBI_GPU_SHARING_TIME_SLICE},
    };
    yaml_node_t *value = map_get(w, node, "sharing");
    if (value) {
        cleanup_free char *sub = path_child(path, "sharing");
        if (!sub)
            return obi_error_oom(w->err);
        const char *text = scalar_text(value);
        size_t i = 0;
        while (i < OBI_ARRAY_SIZE(modes) && !(text && !strcmp(text, modes[i])))
            i++;
        if (i == OBI_ARRAY_SIZE(modes))
            return fail_at(w, value, sub, "expected exclusive, mps or time-slice");
        gpu->sharing = (obi_gpu_sharing)i;
    }
    for (size_t i = 0; i < OBI_ARRAY_SIZE(mode_keys); i++) {
        if (!(value = map_get(w, node, mode_keys[i].key)))
            continue;
        cleanup_free char *sub = path_child(path, mode_keys[i].key);
        if (!sub)
            return obi_error_oom(w->err);
        if (gpu->sharing != mode_keys[i].mode)
            return fail_at(w, value, sub, "only used with sharing: %s", modes[mode_keys[i].mode]);
        int r;
        if (!strcmp(mode_keys[i].key, "time_slice_index")) {
            r = get_uint(w, value, sub, 0, MAX_GPUS * 64, &gpu->time_slice_index);
            gpu->has_time_slice_index = r == 0;
        } else {
            char **dst = !strcmp(mode_keys[i].key, "mps_pipe_dir") ? &gpu->mps_pipe_dir
                         : !strcmp(mode_keys[i].key, "mps_log_dir")
                             ? &gpu->mps_log_dir
                             : &gpu->time_slicing_config_path;
            r = get_host_path(w, value, sub, dst);
        }
        if (r < 0)
            return r;
    }
    if (gpu->sharing == OBI_GPU_SHARING_MPS &&
        ((!gpu->mps_pipe_dir && !(gpu->mps_pipe_dir = strdup("/tmp/nvidia-mps"))) ||
         (!gpu->mps_log_dir && !(gpu->mps_log_dir = strdup("/tmp/nvidia-log")))))
        return obi_error_oom(w->err);
    return 0;
}

static int parse_gpu(walker *w, yaml_node_t *node, const char *path, obi_gpu *gpu)
{
    static const char *const keys[] = {"count",
                                       "vendor",
                                       "mode",
                                       "model",
                                       "scheduling",
                                       "distributed",
                                       "sharing",
                                       "mps_pipe_dir",
                                       "mps_log_dir",
                                       "time_slice_index",
                                       "time_slicing_config_path",
                                       NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    gpu->count = 1;
    gpu->vendor = OBI_GPU_NVIDIA;
    yaml_node_t *value;
    cleanup_free char *count_path = path_child(path, "count");
    cleanup_free char *vendor_path = path_child(path, "vendor");
    cleanup_free char *dist_path = path_child(path, "distributed");
    cleanup_free char *mode_path = path_child(path, "mode");
    cleanup_free char *model_path = path_child(path, "model");
    cleanup_free char *sched_path = path_child(path, "scheduling");
    if (!count_path || !vendor_path || !dist_path || !mode_path || !model_path || !sched_path)
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
    if ((value = map_get(w, node, "mode")) &&
        ((r = check_shape(w, value, mode_path, &STRING_SHAPE)) < 0 ||
         (r = add_notice(w, mode_path,
                         "how zlayer reaches a GPU on macOS (native, vm); on Linux GPUs are "
                         "device nodes, ignored")) < 0))
        return r;
    if ((value = map_get(w, node, "model"))) {
        if ((r = get_nonempty_string(w, value, model_path, &gpu->model)) < 0 ||
            (r = add_notice(w, model_path,
                            "picks nodes whose GPUs match in zlayer's scheduler; ocibuild runs on "
                            "this node's GPUs, ignored")) < 0)
            return r;
    }
    if ((value = map_get(w, node, "scheduling")) &&
        ((r = check_shape(w, value, sched_path, &GPU_SCHEDULING_SHAPE)) < 0 ||
         (r = add_notice(w, sched_path,
                         "how zlayer places GPU replicas across nodes; one node here, "
                         "ignored")) < 0))
        return r;
    if ((r = parse_gpu_sharing(w, node, path, gpu)) < 0)
        return r;
    yaml_node_t *dist = map_get(w, node, "distributed");
    return dist ? parse_gpu_distributed(w, dist, dist_path, gpu) : 0;
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

/* An integer min..max, a leading '-' allowed. */
static int get_int(walker *w, yaml_node_t *node, const char *path, long long min, long long max,
                   long long *out)
{
    const char *text = scalar_text(node);
    unsigned long long magnitude = 0;
    bool negative = text && text[0] == '-';
    if (!text || !obi_parse_decimal(text + negative, (unsigned long long)LLONG_MAX, &magnitude))
        return fail_at(w, node, path, "expected an integer from %lld to %lld", min, max);
    long long value = negative ? -(long long)magnitude : (long long)magnitude;
    if (value < min || value > max)
        return fail_at(w, node, path, "%lld is out of range %lld..%lld", value, min, max);
    *out = value;
    return 0;
}

/* The Docker-style limits of resources, each an OCI linux.resources (or process) field. */
static int parse_resource_limit(walker *w, const char *key, yaml_node_t *value, const char *sub,
                                obi_service *svc)
{
    long long n = 0;
    unsigned u = 0;
    int r;
    if (!strcmp(key, "pids_limit")) {
        /* Docker: 0 and -1 both mean unlimited */
        if ((r = get_int(w, value, sub, -1, INT64_MAX, &n)) < 0)
            return r;
        svc->pids_limit = n > 0 ? n : -1;
        svc->has_pids_limit = true;
    } else if (!strcmp(key, "cpuset")) {
        if ((r = get_nonempty_string(w, value, sub, &svc->cpuset)) < 0)
            return r;
        for (const char *p = svc->cpuset; *p; p++)
            if (!isdigit((unsigned char)*p) && *p != ',' && *p != '-')
                return fail_at(w, value, sub, "\"%s\" is not a CPU list like 0-3,5", svc->cpuset);
    } else if (!strcmp(key, "cpu_shares")) {
        if ((r = get_uint(w, value, sub, 2, 262144, &u)) < 0)
            return r;
        svc->cpu_shares = u;
        svc->has_cpu_shares = true;
    } else if (!strcmp(key, "memory_swap")) {
        /* memory plus swap; -1 unlimited (Docker) */
        const char *text = scalar_text(value);
        if (text && !strcmp(text, "-1")) {
            svc->memory_swap = -1;
        } else {
            uint64_t bytes = 0;
            if ((r = parse_memory_node(w, value, sub, &bytes)) < 0)
                return r;
            if (bytes > INT64_MAX)
                return fail_at(w, value, sub, "too large");
            svc->memory_swap = (int64_t)bytes;
        }
        svc->has_memory_swap = true;
    } else if (!strcmp(key, "memory_reservation")) {
        if ((r = parse_memory_node(w, value, sub, &svc->memory_reservation)) < 0)
            return r;
        svc->has_memory_reservation = true;
    } else if (!strcmp(key, "memory_swappiness")) {
        if ((r = get_uint(w, value, sub, 0, 100, &svc->memory_swappiness)) < 0)
            return r;
        svc->has_memory_swappiness = true;
    } else if (!strcmp(key, "oom_score_adj")) {
        if ((r = get_int(w, value, sub, -1000, 1000, &n)) < 0)
            return r;
        svc->oom_score_adj = (int)n;
        svc->has_oom_score_adj = true;
    } else if (!strcmp(key, "oom_kill_disable")) {
        if ((r = get_bool(w, value, sub, &svc->oom_kill_disable)) < 0)
            return r;
        svc->has_oom_kill_disable = true;
    } else { /* blkio_weight */
        if ((r = get_uint(w, value, sub, 10, 1000, &svc->blkio_weight)) < 0)
            return r;
        svc->has_blkio_weight = true;
    }
    return 0;
}

static int parse_resources(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {
        "cpu",
        "memory",
        "gpu",
        "pids_limit",
        "cpuset",
        "cpu_shares",
        "memory_swap",
        "memory_reservation",
        "memory_swappiness",
        "oom_score_adj",
        "oom_kill_disable",
        "blkio_weight",
        NULL,
    };
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
    for (const char *const *k = keys + 3; *k; k++) {
        if (!(value = map_get(w, node, *k)))
            continue;
        cleanup_free char *sub = path_child(path, *k);
        if (!sub)
            return obi_error_oom(w->err);
        if ((r = parse_resource_limit(w, *k, value, sub, svc)) < 0)
            return r;
    }
    if (svc->has_memory_swap && svc->memory_swap >= 0 &&
        (!svc->has_memory || (uint64_t)svc->memory_swap < svc->memory))
        return fail_at(w, map_get(w, node, "memory_swap"), path,
                       "memory_swap (memory plus swap) needs memory, and must not be below it");
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
        dev->read = dev->write = true; /* zlayer's defaults; mknod is false */
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
    const char *const keys[8];
} STORAGE_KINDS[] = {
    {"bind", OBI_STORAGE_BIND, {"type", "source", "target", "readonly", NULL}},
    {"named", OBI_STORAGE_NAMED, {"type", "name", "target", "readonly", "tier", "size", NULL}},
    {"anonymous", OBI_STORAGE_ANONYMOUS, {"type", "target", "tier", NULL}},
    {"tmpfs", OBI_STORAGE_TMPFS, {"type", "target", "size", "mode", NULL}},
    {"s3",
     OBI_STORAGE_S3,
     {"type", "bucket", "prefix", "target", "readonly", "endpoint", "credentials", NULL}},
};

static const shape STORAGE_TIER_SHAPE = {
    .kind = SHAPE_ENUM,
    .values = (const char *const[]){"local", "cached", "network", NULL},
};

/* Storage keys accepted with no effect here: shape and why. */
static const struct storage_noop {
    obi_storage_type type;
    const char *key;
    shape_kind kind;
    const char *why;
} STORAGE_NOOPS[] = {
    {OBI_STORAGE_NAMED, "tier", SHAPE_ENUM,
     "zlayer's storage tier (local, cached, network); volumes here are directories below the "
     "data dir, ignored"},
    {OBI_STORAGE_ANONYMOUS, "tier", SHAPE_ENUM,
     "zlayer's storage tier (local, cached, network); volumes here are directories below the "
     "data dir, ignored"},
    {OBI_STORAGE_NAMED, "size", SHAPE_MEMORY,
     "a size limit for zlayer's volume backends; volumes here are directories without a quota, "
     "ignored"},
    {OBI_STORAGE_S3, "endpoint", SHAPE_STRING,
     "zlayer's S3 FUSE mount; here the bucket is DATA/s3/BUCKET, synced by someone else, "
     "ignored"},
    {OBI_STORAGE_S3, "credentials", SHAPE_STRING,
     "zlayer's S3 FUSE mount; here the bucket is DATA/s3/BUCKET, synced by someone else, "
     "ignored"},
};

static int parse_storage_noop(walker *w, const obi_storage *st, const char *key, yaml_node_t *value,
                              const char *sub, bool *handled)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(STORAGE_NOOPS); i++) {
        const struct storage_noop *noop = &STORAGE_NOOPS[i];
        if (noop->type != st->type || strcmp(noop->key, key))
            continue;
        shape sh = {.kind = noop->kind};
        if (noop->kind == SHAPE_ENUM)
            sh = STORAGE_TIER_SHAPE;
        *handled = true;
        int r = check_shape(w, value, sub, &sh);
        return r < 0 ? r : add_notice(w, sub, noop->why);
    }
    *handled = false;
    return 0;
}

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
    yaml_node_t *readonly = map_get(w, item, "readonly");
    if (kind->type == OBI_STORAGE_ANONYMOUS && readonly) {
        cleanup_free char *ro_path = path_child(item_path, "readonly");
        return fail_at(w, readonly, ro_path ? ro_path : item_path,
                       "anonymous storage starts empty, so a read-only one could never hold "
                       "anything (zlayer has no readonly for it); use a named volume or a bind "
                       "mount");
    }
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
        bool handled = false;
        if ((r = parse_storage_noop(w, st, *k, value, sub, &handled)) < 0)
            return r;
        if (handled)
            continue;
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

/* A list of capability names, normalised to CAP_X and deduplicated (document order). */
static int get_capability_list(walker *w, yaml_node_t *node, const char *path, char ***out)
{
    cleanup_strv char **names = NULL;
    int r = get_strv(w, node, path, &names);
    if (r < 0)
        return r;
    size_t n = 0;
    while (names && names[n])
        n++;
    cleanup_strv char **caps = calloc(n + 1, sizeof *caps);
    if (!caps)
        return obi_error_oom(w->err);
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        const char *cap = obi_capability_normalize(names[i]);
        if (!cap) {
            cleanup_free char *item_path = path_index(path, i);
            return fail_at(w, node_get(w, node->data.sequence.items.start[i]),
                           item_path ? item_path : path, "unknown capability \"%s\"", names[i]);
        }
        bool seen = false;
        for (size_t j = 0; j < count && !seen; j++)
            seen = !strcmp(caps[j], cap);
        if (!seen && !(caps[count++] = strdup(cap)))
            return obi_error_oom(w->err);
    }
    obi_strv_free(*out);
    *out = steal_pointer(&caps);
    return 0;
}

/* capabilities, or its Docker alias cap_add (zlayer takes either, not both). */
static int parse_capabilities(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    if (svc->has_capabilities)
        return fail_at(w, node, path,
                       "cap_add is zlayer's alias of capabilities: give one of them, not both");
    int r = get_capability_list(w, node, path, &svc->capabilities);
    svc->has_capabilities = r == 0;
    return r;
}

static int parse_cap_drop(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    int r = get_capability_list(w, node, path, &svc->cap_drop);
    if (r == 0 && !svc->cap_drop[0]) {
        free(svc->cap_drop);
        svc->cap_drop = NULL;
    }
    return r;
}

/* scale is zlayer's tagged union on mode: fixed {replicas}, adaptive {min, max, cooldown,
 * targets}, manual {}. Without mode it is nothing zlayer can read, so it is refused (zlayer:
 * "missing field mode"). Adaptive runs min replicas (at least one): the metric-driven scaling
 * between min and max is zlayer's autoscaler, which ocibuild does not have (a notice says so). */
static int parse_scale(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const modes[] = {"fixed", "adaptive", "manual"};
    static const char *const keys[][6] = {
        {"mode", "replicas", NULL},
        {"mode", "min", "max", "cooldown", "targets", NULL},
        {"mode", NULL},
    };
    if (node->type != YAML_MAPPING_NODE)
        return fail_at(w, node, path, "expected a mapping, got %s", node_kind(node));
    yaml_node_t *mode = map_get(w, node, "mode");
    if (!mode)
        return fail_at(w, node, path,
                       "missing key \"mode\" (fixed with replicas, adaptive with min and max, or "
                       "manual)");
    cleanup_free char *mode_path = path_child(path, "mode");
    if (!mode_path)
        return obi_error_oom(w->err);
    const char *text = scalar_text(mode);
    size_t m = 0;
    while (m < OBI_ARRAY_SIZE(modes) && !(text && !strcmp(text, modes[m])))
        m++;
    if (m == OBI_ARRAY_SIZE(modes))
        return fail_at(w, mode, mode_path, "expected fixed, adaptive or manual");
    int r = check_mapping(w, node, path, keys[m]);
    if (r < 0)
        return r;
    obi_scale *scale = &svc->scale;
    scale->mode = (obi_scale_mode)m;
    const char *required[] = {"replicas", "min", "max"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(required); i++) {
        bool wanted = m == OBI_SCALE_FIXED ? i == 0 : m == OBI_SCALE_ADAPTIVE && i > 0;
        yaml_node_t *value = map_get(w, node, required[i]);
        cleanup_free char *sub = path_child(path, required[i]);
        if (!sub)
            return obi_error_oom(w->err);
        if (wanted && !value)
            return fail_at(w, node, sub, "missing: scale mode %s needs it", modes[m]);
        if (!wanted)
            continue;
        unsigned *dst = i == 0 ? &svc->replicas : i == 1 ? &scale->min : &scale->max;
        if ((r = get_uint(w, value, sub, i == 0 ? 1 : 0, MAX_REPLICAS, dst)) < 0)
            return r;
    }
    if (m == OBI_SCALE_MANUAL) {
        svc->replicas = 1;
        return add_notice(w, path,
                          "manual scaling: zlayer leaves the count to an operator; ocibuild runs "
                          "one replica");
    }
    if (m == OBI_SCALE_FIXED)
        return 0;
    if (scale->min > scale->max)
        return fail_at(w, node, path, "min (%u) is greater than max (%u)", scale->min, scale->max);
    yaml_node_t *value;
    if ((value = map_get(w, node, "cooldown"))) {
        cleanup_free char *sub = path_child(path, "cooldown");
        const char *cooldown = scalar_text(value);
        cleanup_error obi_error *inner = NULL;
        if (!sub)
            return obi_error_oom(w->err);
        if (!cooldown || obi_parse_duration(cooldown, &scale->cooldown_ms, &inner) < 0)
            return fail_at(w, value, sub, "%s",
                           inner ? inner->message : "expected a duration like 30s");
    }
    if ((value = map_get(w, node, "targets"))) {
        static const char *const targets[] = {"cpu", "memory", "rps", NULL};
        cleanup_free char *sub = path_child(path, "targets");
        if (!sub)
            return obi_error_oom(w->err);
        if ((r = check_mapping(w, value, sub, targets)) < 0)
            return r;
        for (size_t i = 0; targets[i]; i++) {
            yaml_node_t *target = map_get(w, value, targets[i]);
            cleanup_free char *target_path = path_child(sub, targets[i]);
            if (!target_path)
                return obi_error_oom(w->err);
            unsigned *dst = i == 0   ? &scale->target_cpu
                            : i == 1 ? &scale->target_memory
                                     : &scale->target_rps;
            if (target &&
                (r = get_uint(w, target, target_path, 0, i < 2 ? 100 : UINT32_MAX, dst)) < 0)
                return r;
        }
    }
    svc->replicas = scale->min ? scale->min : 1;
    char why[160];
    snprintf(why, sizeof why,
             "adaptive scaling between min and max is zlayer's autoscaler; ocibuild runs min (%u) "
             "replica%s",
             svc->replicas, svc->replicas == 1 ? "" : "s");
    return add_notice(w, path, why);
}

/* ---- endpoints and ports -------------------------------------------------------------------- */

static const shape EXPOSE_SHAPE = {
    .kind = SHAPE_ENUM,
    .values = (const char *const[]){"public", "internal", NULL},
};

/* endpoints[].stream (L4 proxy options) and endpoints[].tunnel: zlayer's proxy and tunnels. */
static const shape ENDPOINT_STREAM_SHAPE = {
    .kind = SHAPE_MAP,
    .fields =
        (const shape[]){
            {.key = "tls", .kind = SHAPE_BOOL},
            {.key = "proxy_protocol", .kind = SHAPE_BOOL},
            {.key = "session_timeout", .kind = SHAPE_DURATION},
            {.key = "health_check",
             .kind = SHAPE_MAP,
             .fields =
                 (const shape[]){
                     {.key = "type",
                      .kind = SHAPE_ENUM,
                      .required = true,
                      .values = (const char *const[]){"tcp_connect", "udp_probe", NULL}},
                     {.key = "request", .kind = SHAPE_STRING},
                     {.key = "expect", .kind = SHAPE_STRING},
                     {0},
                 }},
            {0},
        },
};

static const shape ENDPOINT_TUNNEL_SHAPE = {
    .kind = SHAPE_MAP,
    .fields =
        (const shape[]){
            {.key = "enabled", .kind = SHAPE_BOOL},
            {.key = "from", .kind = SHAPE_STRING},
            {.key = "to", .kind = SHAPE_STRING},
            {.key = "remote_port", .kind = SHAPE_UINT, .max = 65535},
            {.key = "expose",
             .kind = SHAPE_ENUM,
             .values = (const char *const[]){"public", "internal", NULL}},
            {.key = "access",
             .kind = SHAPE_MAP,
             .fields =
                 (const shape[]){
                     {.key = "enabled", .kind = SHAPE_BOOL},
                     {.key = "max_ttl", .kind = SHAPE_DURATION},
                     {.key = "audit", .kind = SHAPE_BOOL},
                     {0},
                 }},
            {0},
        },
};

static int parse_endpoint(walker *w, yaml_node_t *item, const char *item_path, obi_endpoint *ep)
{
    static const char *const keys[] = {"name",        "protocol", "port",   "target_port",
                                       "path",        "host",     "expose", "stream",
                                       "target_role", "tunnel",   NULL};
    static const char *const protocols[] = {"http", "https", "tcp", "udp", "websocket"};
    int r = check_mapping(w, item, item_path, keys);
    if (r < 0)
        return r;
    for (size_t i = 0; i < 3; i++)
        if (!map_get(w, item, keys[i]))
            return fail_at(w, item, item_path, "missing key \"%s\"", keys[i]);
    for (const char *const *k = keys; *k; k++) {
        yaml_node_t *value = map_get(w, item, *k);
        if (!value)
            continue;
        cleanup_free char *sub = path_child(item_path, *k);
        if (!sub)
            return obi_error_oom(w->err);
        const char *text = scalar_text(value);
        if (!strcmp(*k, "name")) {
            r = get_nonempty_string(w, value, sub, &ep->name);
        } else if (!strcmp(*k, "protocol")) {
            size_t i = 0;
            while (i < OBI_ARRAY_SIZE(protocols) && !(text && !strcmp(text, protocols[i])))
                i++;
            if (i == OBI_ARRAY_SIZE(protocols))
                return fail_at(w, value, sub, "expected http, https, tcp, udp or websocket");
            ep->protocol = (obi_endpoint_protocol)i;
        } else if (!strcmp(*k, "port")) {
            r = get_uint(w, value, sub, 1, 65535, &ep->port);
        } else if (!strcmp(*k, "target_port")) {
            r = get_uint(w, value, sub, 1, 65535, &ep->target_port);
        } else if (!strcmp(*k, "path")) {
            if ((r = get_nonempty_string(w, value, sub, &ep->path)) == 0 && ep->path[0] != '/')
                r = fail_at(w, value, sub, "\"%s\" is not a URL path (it starts with /)", ep->path);
        } else if (!strcmp(*k, "host")) {
            r = get_nonempty_string(w, value, sub, &ep->host);
        } else if (!strcmp(*k, "expose")) {
            if ((r = check_shape(w, value, sub, &EXPOSE_SHAPE)) == 0)
                ep->public = !strcmp(text, "public");
        } else if (!strcmp(*k, "stream") || !strcmp(*k, "tunnel")) {
            bool stream = !strcmp(*k, "stream");
            if ((r = check_shape(w, value, sub,
                                 stream ? &ENDPOINT_STREAM_SHAPE : &ENDPOINT_TUNNEL_SHAPE)) == 0)
                r = add_notice(w, sub,
                               stream ? "TLS, PROXY protocol and L4 health checks of zlayer's "
                                        "proxy; the service network forwards plain ports, ignored"
                                      : "zlayer's tunnels between nodes; one node here, ignored");
        } else { /* target_role */
            r = fail_at(w, value, sub, "names a replica group, and ocibuild has no replica_groups");
        }
        if (r < 0)
            return r;
    }
    if (!ep->target_port)
        ep->target_port = ep->port;
    if (ep->path && ep->protocol != OBI_ENDPOINT_HTTP && ep->protocol != OBI_ENDPOINT_HTTPS &&
        ep->protocol != OBI_ENDPOINT_WEBSOCKET)
        return fail_at(w, map_get(w, item, "path"), item_path,
                       "path is only for http, https and websocket endpoints");
    return 0;
}

static int parse_endpoints(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    size_t n = 0;
    int r = alloc_for_sequence(w, node, path, sizeof *svc->endpoints, (void **)&svc->endpoints, &n);
    for (size_t i = 0; r == 0 && i < n; i++) {
        yaml_node_t *item = NULL;
        cleanup_free char *item_path = NULL;
        if ((r = sequence_item(w, node, path, i, &item, &item_path)) < 0)
            return r;
        obi_endpoint *ep = &svc->endpoints[svc->endpoint_count++];
        if ((r = parse_endpoint(w, item, item_path, ep)) < 0)
            return r;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(svc->endpoints[j].name, ep->name))
                return fail_at(w, item, item_path,
                               "endpoint name \"%s\" is already used by %s[%zu]", ep->name, path,
                               j);
    }
    return r;
}

static bool ip_is_valid(const char *text)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, text, buf) == 1 || inet_pton(AF_INET6, text, buf) == 1;
}

static int parse_port_mappings(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"host_port", "container_port", "protocol", "host_ip", NULL};
    size_t n = 0;
    int r = alloc_for_sequence(w, node, path, sizeof *svc->port_mappings,
                               (void **)&svc->port_mappings, &n);
    for (size_t i = 0; r == 0 && i < n; i++) {
        yaml_node_t *item = NULL;
        cleanup_free char *item_path = NULL;
        if ((r = sequence_item(w, node, path, i, &item, &item_path)) < 0 ||
            (r = check_mapping(w, item, item_path, keys)) < 0)
            return r;
        obi_port_mapping *pm = &svc->port_mappings[svc->port_mapping_count++];
        if (!map_get(w, item, "container_port"))
            return fail_at(w, item, item_path, "missing key \"container_port\"");
        for (const char *const *k = keys; *k; k++) {
            yaml_node_t *value = map_get(w, item, *k);
            cleanup_free char *sub = path_child(item_path, *k);
            if (!sub)
                return obi_error_oom(w->err);
            const char *text = value ? scalar_text(value) : NULL;
            if (!value)
                continue;
            if (!strcmp(*k, "host_port"))
                r = get_uint(w, value, sub, 0, 65535, &pm->host_port);
            else if (!strcmp(*k, "container_port"))
                r = get_uint(w, value, sub, 1, 65535, &pm->container_port);
            else if (!strcmp(*k, "protocol"))
                r = text && (!strcmp(text, "tcp") || !strcmp(text, "udp"))
                        ? (pm->udp = !strcmp(text, "udp"), 0)
                        : fail_at(w, value, sub, "expected tcp or udp");
            else if ((r = get_nonempty_string(w, value, sub, &pm->host_ip)) == 0 &&
                     !ip_is_valid(pm->host_ip))
                r = fail_at(w, value, sub, "\"%s\" is not an IPv4 or IPv6 address", pm->host_ip);
            if (r < 0)
                return r;
        }
    }
    return r;
}

/* ---- process and container options ------------------------------------------------------------
 */

/* Docker's --ulimit names -> OCI rlimit types (zlayer's table). */
static const struct ulimit_name {
    const char *name;
    const char *type;
} ULIMIT_NAMES[] = {
    {"cpu", "RLIMIT_CPU"},           {"fsize", "RLIMIT_FSIZE"},
    {"data", "RLIMIT_DATA"},         {"stack", "RLIMIT_STACK"},
    {"core", "RLIMIT_CORE"},         {"rss", "RLIMIT_RSS"},
    {"nproc", "RLIMIT_NPROC"},       {"nofile", "RLIMIT_NOFILE"},
    {"memlock", "RLIMIT_MEMLOCK"},   {"as", "RLIMIT_AS"},
    {"locks", "RLIMIT_LOCKS"},       {"sigpending", "RLIMIT_SIGPENDING"},
    {"msgqueue", "RLIMIT_MSGQUEUE"}, {"nice", "RLIMIT_NICE"},
    {"rtprio", "RLIMIT_RTPRIO"},     {"rttime", "RLIMIT_RTTIME"},
};

/* A limit: a number, or -1 for unlimited (Docker's spelling; zlayer would clamp it to 0). */
static int get_limit(walker *w, yaml_node_t *node, const char *path, uint64_t *out)
{
    const char *text = scalar_text(node);
    unsigned long long value = 0;
    if (text && !strcmp(text, "-1")) {
        *out = UINT64_MAX;
        return 0;
    }
    if (!text || !obi_parse_decimal(text, UINT64_MAX - 1, &value))
        return fail_at(w, node, path, "expected a number, or -1 for unlimited");
    *out = value;
    return 0;
}

/* ulimits: {nofile: {soft: 65536, hard: 65536}}; one bound stands for both (zlayer's rule). */
static int parse_ulimits(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"soft", "hard", NULL};
    int r = check_mapping(w, node, path, NULL);
    if (r < 0)
        return r;
    size_t n = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
    if (!(svc->ulimits = calloc(n ? n : 1, sizeof *svc->ulimits)))
        return obi_error_oom(w->err);
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *pair = &node->data.mapping.pairs.start[i];
        const char *name = scalar_text(node_get(w, pair->key));
        yaml_node_t *limit = node_get(w, pair->value);
        cleanup_free char *sub = path_child(path, name);
        if (!sub)
            return obi_error_oom(w->err);
        const struct ulimit_name *known = NULL;
        for (size_t k = 0; k < OBI_ARRAY_SIZE(ULIMIT_NAMES) && !known; k++)
            if (!strcasecmp(name, ULIMIT_NAMES[k].name))
                known = &ULIMIT_NAMES[k];
        if (!known)
            return fail_at(w, node_get(w, pair->key), sub,
                           "unknown ulimit (cpu, fsize, data, stack, core, rss, nproc, nofile, "
                           "memlock, as, locks, sigpending, msgqueue, nice, rtprio, rttime)");
        for (size_t j = 0; j < svc->ulimit_count; j++)
            if (svc->ulimits[j].type == known->type)
                return fail_at(w, node_get(w, pair->key), sub, "named twice");
        if ((r = check_mapping(w, limit, sub, keys)) < 0)
            return r;
        obi_ulimit *u = &svc->ulimits[svc->ulimit_count++];
        u->type = known->type;
        yaml_node_t *soft = map_get(w, limit, "soft"), *hard = map_get(w, limit, "hard");
        cleanup_free char *soft_path = path_child(sub, "soft");
        cleanup_free char *hard_path = path_child(sub, "hard");
        if (!soft_path || !hard_path)
            return obi_error_oom(w->err);
        if (!soft && !hard)
            return fail_at(w, limit, sub, "give soft, hard or both");
        if ((soft && (r = get_limit(w, soft, soft_path, &u->soft)) < 0) ||
            (hard && (r = get_limit(w, hard, hard_path, &u->hard)) < 0))
            return r;
        if (!soft)
            u->soft = u->hard;
        if (!hard)
            u->hard = u->soft;
        if (u->soft > u->hard)
            return fail_at(w, soft, soft_path, "soft limit above the hard limit");
    }
    return 0;
}

static int parse_dns(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    int r = get_strv(w, node, path, &svc->dns);
    for (size_t i = 0; r == 0 && svc->dns && svc->dns[i]; i++)
        if (!ip_is_valid(svc->dns[i])) {
            cleanup_free char *sub = path_index(path, i);
            return fail_at(w, node_get(w, node->data.sequence.items.start[i]), sub ? sub : path,
                           "\"%s\" is not an IPv4 or IPv6 address", svc->dns[i]);
        }
    return r;
}

/* A cgroupfs path below which the replica's cgroup is made (cgroupsPath PARENT/ID). systemd's
 * slice:prefix:name form needs the runtime's --systemd-cgroup, which ocibuild does not pass. */
static int parse_cgroup_parent(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    int r = get_nonempty_string(w, node, path, &svc->cgroup_parent);
    if (r < 0)
        return r;
    cleanup_free char *absolute = NULL;
    if (asprintf(&absolute, "%s%s", svc->cgroup_parent[0] == '/' ? "" : "/", svc->cgroup_parent) <
        0)
        return obi_error_oom(w->err);
    for (const char *p = absolute; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("/._-@", *p))
            return fail_at(w, node, path,
                           "\"%s\" is not a cgroup path (letters, digits and / . _ - @; the "
                           "systemd slice:prefix:name form is not used here)",
                           svc->cgroup_parent);
    if (!path_is_clean_absolute(absolute) || strstr(absolute, "//"))
        return fail_at(w, node, path, "\"%s\" must not contain \"..\" or empty components",
                       svc->cgroup_parent);
    size_t len = strlen(absolute);
    if (len > 1 && absolute[len - 1] == '/')
        absolute[len - 1] = '\0';
    free(svc->cgroup_parent);
    svc->cgroup_parent = steal_pointer(&absolute);
    return 0;
}

/* A mapping of strings to strings (labels, sysctls). name_ok checks each key. */
static int get_string_pairs(walker *w, yaml_node_t *node, const char *path,
                            bool (*name_ok)(const char *), const char *what,
                            obi_service_env_var **out, size_t *count)
{
    int r = check_mapping(w, node, path, NULL);
    if (r < 0)
        return r;
    size_t n = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
    if (!(*out = calloc(n ? n : 1, sizeof **out)))
        return obi_error_oom(w->err);
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *pair = &node->data.mapping.pairs.start[i];
        const char *name = scalar_text(node_get(w, pair->key));
        cleanup_free char *sub = path_child(path, name);
        if (!sub)
            return obi_error_oom(w->err);
        if (!name_ok(name))
            return fail_at(w, node_get(w, pair->key), sub, "not a valid %s name", what);
        obi_service_env_var *var = &(*out)[(*count)++];
        if (!(var->name = strdup(name)))
            return obi_error_oom(w->err);
        if ((r = get_string(w, node_get(w, pair->value), sub, &var->value)) < 0)
            return r;
    }
    return 0;
}

static bool label_name_is_valid(const char *name)
{
    return *name != '\0';
}

static bool sysctl_name_is_valid(const char *name)
{
    if (!isalpha((unsigned char)*name))
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("._-/", *p))
            return false;
    return strstr(name, "..") == NULL;
}

static int parse_labels(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    return get_string_pairs(w, node, path, label_name_is_valid, "label", &svc->labels,
                            &svc->label_count);
}

static int parse_sysctls(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    return get_string_pairs(w, node, path, sysctl_name_is_valid, "sysctl", &svc->sysctls,
                            &svc->sysctl_count);
}

static int parse_user(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    int r = get_nonempty_string(w, node, path, &svc->user);
    if (r < 0)
        return r;
    for (const char *p = svc->user; *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return fail_at(w, node, path, "\"%s\" is not uid[:gid] or user[:group]", svc->user);
    return 0;
}

static int parse_extra_groups(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    int r = get_strv(w, node, path, &svc->extra_groups);
    for (size_t i = 0; r == 0 && svc->extra_groups && svc->extra_groups[i]; i++) {
        const char *g = svc->extra_groups[i];
        bool ok = *g != '\0';
        for (const char *p = g; *p && ok; p++)
            ok = isalnum((unsigned char)*p) || strchr("._-", *p);
        if (!ok) {
            cleanup_free char *sub = path_index(path, i);
            return fail_at(w, node_get(w, node->data.sequence.items.start[i]), sub ? sub : path,
                           "\"%s\" is not a group name or gid", g);
        }
    }
    return r;
}

static int parse_read_only_root_fs(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    return get_bool(w, node, path, &svc->read_only_root_fs);
}

/* security_opt: no-new-privileges[:true|=true|:false] is applied; the rest (apparmor=,
 * seccomp=, label=, systempaths=) are notices: the runtime's default profile stays. */
static int parse_security_opt(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    cleanup_strv char **opts = NULL;
    int r = get_strv(w, node, path, &opts);
    for (size_t i = 0; r == 0 && opts && opts[i]; i++) {
        cleanup_free char *sub = path_index(path, i);
        if (!sub)
            return obi_error_oom(w->err);
        const char *o = opts[i];
        if (!strncmp(o, "no-new-privileges", 17) &&
            (!o[17] || !strcmp(o + 17, ":true") || !strcmp(o + 17, "=true") ||
             !strcmp(o + 17, ":false") || !strcmp(o + 17, "=false"))) {
            svc->has_no_new_privileges = true;
            svc->no_new_privileges = !strstr(o, "false");
        } else {
            r = add_notice(w, sub,
                           "a Docker security option other than no-new-privileges; the runtime's "
                           "defaults apply, ignored");
        }
    }
    return r;
}

static int parse_stop_signal(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    svc->stop_signal = obi_signal_parse(scalar_text(node));
    if (!svc->stop_signal)
        return fail_at(w, node, path, "expected a signal like SIGTERM, TERM or 15");
    return 0;
}

static int parse_stop_grace_period(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    const char *text = scalar_text(node);
    cleanup_error obi_error *inner = NULL;
    if (!text || obi_parse_duration(text, &svc->stop_grace_ms, &inner) < 0)
        return fail_at(w, node, path, "%s", inner ? inner->message : "expected a duration");
    return 0;
}

static int parse_lifecycle(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"delete_on_exit", NULL};
    int r = check_mapping(w, node, path, keys);
    yaml_node_t *value = r == 0 ? map_get(w, node, "delete_on_exit") : NULL;
    if (!value)
        return r;
    cleanup_free char *sub = path_child(path, "delete_on_exit");
    if (!sub)
        return obi_error_oom(w->err);
    return get_bool(w, value, sub, &svc->delete_on_exit);
}

/* network_mode: Docker's strings ("host", "none", "bridge[:NAME]", "container:ID", "default") or
 * zlayer's tagged form ({bridge: {name: N}}, {container: {id: ID}}). host is host_network; the
 * others leave the replica in its own network namespace (a notice says so). */
static const shape NETWORK_MODE_SHAPE = {
    .kind = SHAPE_ONE_OF,
    .fields =
        (const shape[]){
            {.kind = SHAPE_STRING},
            {.kind = SHAPE_MAP,
             .fields =
                 (const shape[]){
                     {.key = "bridge",
                      .kind = SHAPE_MAP,
                      .fields = (const shape[]){{.key = "name", .kind = SHAPE_STRING}, {0}}},
                     {.key = "container",
                      .kind = SHAPE_MAP,
                      .fields =
                          (const shape[]){{.key = "id", .kind = SHAPE_STRING, .required = true},
                                          {0}}},
                     {.key = "default", .kind = SHAPE_ANY},
                     {.key = "host", .kind = SHAPE_ANY},
                     {.key = "none", .kind = SHAPE_ANY},
                     {0},
                 }},
            {0},
        },
};

static int parse_network_mode(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    int r = check_shape(w, node, path, &NETWORK_MODE_SHAPE);
    if (r < 0)
        return r;
    const char *text = scalar_text(node);
    if (node->type == YAML_MAPPING_NODE &&
        node->data.mapping.pairs.top - node->data.mapping.pairs.start != 1)
        return fail_at(w, node, path, "expected one of bridge, container, default, host, none");
    if (!text)
        text = scalar_text(node_get(w, node->data.mapping.pairs.start[0].key));
    if (!strcmp(text, "default"))
        return 0;
    if (!strcmp(text, "host")) {
        svc->host_network = true;
        return 0;
    }
    if (strcmp(text, "none") && strcmp(text, "bridge") && strncmp(text, "bridge:", 7) &&
        strcmp(text, "container") && (strncmp(text, "container:", 10) || !text[10]))
        return fail_at(w, node, path,
                       "unknown network mode \"%s\" (default, host, none, bridge[:NAME], "
                       "container:ID)",
                       text);
    return add_notice(w, path,
                      "Docker network modes other than host: the replica keeps its own network "
                      "namespace, set up by the service network");
}

/* A host name for /etc/hosts: letters, digits, '-', '.', '_' (a line of the replica's hosts
 * file must not be split or commented out by it). */
static bool hosts_name_is_valid(const char *name, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("-._", name[i]))
            return false;
    return true;
}

/* extra_hosts: Docker's --add-host "NAME:ADDRESS" (split at the first colon, so the address may
 * be IPv6), ADDRESS an IP or host-gateway; written into the replica's /etc/hosts
 * (service_hosts.h). */
static int parse_extra_hosts(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    int r = get_strv(w, node, path, &svc->extra_hosts);
    for (size_t i = 0; r == 0 && svc->extra_hosts && svc->extra_hosts[i]; i++) {
        const char *line = svc->extra_hosts[i];
        const char *colon = strchr(line, ':');
        if (!colon || !hosts_name_is_valid(line, (size_t)(colon - line)) ||
            (strcmp(colon + 1, "host-gateway") && !ip_is_valid(colon + 1))) {
            cleanup_free char *sub = path_index(path, i);
            return fail_at(w, node_get(w, node->data.sequence.items.start[i]), sub ? sub : path,
                           "\"%s\" is not HOSTNAME:IP (a name of [A-Za-z0-9.-_], an IPv4 or "
                           "IPv6 address or host-gateway)",
                           line);
        }
    }
    return r;
}

/* pid_mode, ipc_mode: Docker's --pid/--ipc. host shares the host's namespace; "", private,
 * shareable (ipc) keep the replica's own; service:NAME and container:NAME (joining another
 * container's) keep its own too, with a notice: each replica has a user namespace of its own,
 * and a namespace it owns cannot be joined from another. */
static int parse_namespace_mode(walker *w, yaml_node_t *node, const char *path,
                                obi_namespace_mode *out, bool ipc)
{
    const char *text = scalar_text(node);
    if (!text)
        return fail_at(w, node, path, "expected a string");
    *out = OBI_NAMESPACE_PRIVATE;
    if (!strcmp(text, "host")) {
        *out = OBI_NAMESPACE_HOST;
        return 0;
    }
    if (!*text || !strcmp(text, "private") || (ipc && !strcmp(text, "shareable")))
        return 0;
    if ((!strncmp(text, "service:", 8) && text[8]) ||
        (!strncmp(text, "container:", 10) && text[10]))
        return add_notice(w, path,
                          "joining another replica's namespace: replicas have user namespaces "
                          "of their own, from which another's cannot be joined; the replica "
                          "keeps its own");
    return fail_at(w, node, path, "expected host, private%s, service:NAME or container:NAME",
                   ipc ? ", shareable" : "");
}

static int parse_pid_mode(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    return parse_namespace_mode(w, node, path, &svc->pid_mode, false);
}

static int parse_ipc_mode(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    return parse_namespace_mode(w, node, path, &svc->ipc_mode, true);
}

/* userns_mode: host leaves the replica in the host's user namespace (Docker's --userns=host;
 * lifecycle refuses it for a normal user, whose replicas need one); other values name a remap
 * of Docker's daemon config: the replica keeps ocibuild's, with a notice. */
static int parse_userns_mode(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    const char *text = scalar_text(node);
    if (!text)
        return fail_at(w, node, path, "expected a string");
    svc->userns_host = !strcmp(text, "host");
    if (svc->userns_host || !*text)
        return 0;
    return add_notice(w, path,
                      "a user namespace remap of Docker's daemon; replicas use ocibuild's "
                      "(ocibuild-svc's /etc/subuid range)");
}

static int parse_init_container(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    return get_bool(w, node, path, &svc->init_container);
}

/* service_type: standard (ocibuild's only kind); job is rtype: job's older spelling in zlayer;
 * the WASM kinds are refused, since nothing here runs WASM components. */
static const shape SERVICE_TYPE_SHAPE = {
    .kind = SHAPE_ENUM,
    .values = (const char *const[]){"standard", "job", "wasm_http", "wasm_plugin",
                                    "wasm_transformer", "wasm_authenticator", "wasm_rate_limiter",
                                    "wasm_middleware", "wasm_router", NULL},
};

static int parse_service_type(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    (void)svc;
    int r = check_shape(w, node, path, &SERVICE_TYPE_SHAPE);
    if (r < 0)
        return r;
    const char *text = scalar_text(node);
    if (!strncmp(text, "wasm_", 5))
        return fail_at(w, node, path,
                       "%s: WASM services are not supported (ocibuild runs OCI containers)", text);
    if (!strcmp(text, "job"))
        return add_notice(w, path, "zlayer's run-to-completion kind; ocibuild reads rtype: job");
    return 0;
}

static int parse_replica_groups(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    (void)svc;
    return fail_at(w, node, path,
                   "heterogeneous replica groups are not supported (use one service per group "
                   "with scale.replicas)");
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

static int parse_schedule(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    int r = get_nonempty_string(w, node, path, &svc->schedule);
    obi_cron cron;
    cleanup_error obi_error *cron_err = NULL;
    if (r == 0 && obi_cron_parse(svc->schedule, &cron, &cron_err) < 0)
        r = fail_at(w, node, path, "\"%s\" is not a cron expression: %s", svc->schedule,
                    cron_err->message);
    return r;
}

/* ---- supervisor keys: health, depends, init, errors, restart_policy (supervisor.h) --------- */

/* A duration (number.h's obi_parse_duration: zlayer's humantime form) in milliseconds. */
static int get_duration(walker *w, yaml_node_t *node, const char *path, uint64_t *out)
{
    const char *text = scalar_text(node);
    cleanup_error obi_error *inner = NULL;
    if (!text || obi_parse_duration(text, out, &inner) < 0)
        return fail_at(w, node, path, "expected a duration such as 500ms, 10s, 5m or 1h 30m%s%s",
                       inner ? ": " : "", inner ? inner->message : "");
    return 0;
}

/* One of names (NULL-terminated) into *out (its index). */
static int get_choice(walker *w, yaml_node_t *node, const char *path, const char *const *names,
                      int *out)
{
    const char *text = scalar_text(node);
    for (int i = 0; text && names[i]; i++)
        if (!strcmp(text, names[i])) {
            *out = i;
            return 0;
        }
    obi_buf list = OBI_BUF_INIT;
    for (int i = 0; names[i]; i++)
        if (obi_buf_appendf(&list, "%s%s", i ? ", " : "", names[i]) < 0) {
            obi_buf_free(&list);
            return obi_error_oom(w->err);
        }
    cleanup_free char *expected = obi_buf_steal(&list);
    return fail_at(w, node, path, "expected one of %s", expected ? expected : "?");
}

/* Looks up key in map; with a value, calls the getter with the key's path. */
#define WITH_KEY(w, map, path, key, call)                                                          \
    do {                                                                                           \
        yaml_node_t *value_ = map_get((w), (map), (key));                                          \
        if (value_) {                                                                              \
            cleanup_free char *key_path_ = path_child((path), (key));                              \
            if (!key_path_)                                                                        \
                return obi_error_oom((w)->err);                                                    \
            yaml_node_t *node_ = value_;                                                           \
            const char *sub_ = key_path_;                                                          \
            int key_r_ = (call);                                                                   \
            if (key_r_ < 0)                                                                        \
                return key_r_;                                                                     \
        }                                                                                          \
    } while (0)

static const char *const FAILURE_ACTIONS[] = {"fail", "warn", "continue", NULL};

static int parse_health_check(walker *w, yaml_node_t *node, const char *path, obi_health *h)
{
    static const char *const keys[] = {"type", "port", "url", "expect_status", "command", NULL};
    static const char *const types[] = {"tcp", "http", "command", NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    yaml_node_t *type = map_get(w, node, "type");
    if (!type)
        return fail_at(w, node, path, "missing key \"type\" (tcp, http or command)");
    int kind = 0;
    WITH_KEY(w, node, path, "type", get_choice(w, node_, sub_, types, &kind));
    h->kind = (obi_health_kind)(kind + 1);
    static const char *const needs[] = {"port", "url", "command"};
    for (int k = 0; k < 3; k++) {
        bool given = map_get(w, node, needs[k]) != NULL;
        if (given != (k == kind))
            return fail_at(w, node, path, "%s \"%s\" for a %s check",
                           given ? "unexpected" : "missing", needs[k], types[kind]);
    }
    if (map_get(w, node, "expect_status") && h->kind != OBI_HEALTH_HTTP)
        return fail_at(w, node, path, "expect_status is for http checks");
    h->expect_status = 200;
    WITH_KEY(w, node, path, "port", get_uint(w, node_, sub_, 1, 65535, &h->port));
    WITH_KEY(w, node, path, "url", get_nonempty_string(w, node_, sub_, &h->url));
    if (h->url && strncmp(h->url, "http://", 7))
        return fail_at(w, map_get(w, node, "url"), path,
                       "url: only http:// URLs are checked (no TLS), got \"%s\"", h->url);
    WITH_KEY(w, node, path, "expect_status", get_uint(w, node_, sub_, 100, 599, &h->expect_status));
    WITH_KEY(w, node, path, "command", get_nonempty_string(w, node_, sub_, &h->command));
    return 0;
}

static int parse_health(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"start_grace", "interval", "timeout",
                                       "retries",     "check",    NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    obi_health *h = &svc->health;
    h->interval_ms = 10000; /* zlayer's defaults */
    h->timeout_ms = 5000;
    h->retries = 3;
    if (!map_get(w, node, "check"))
        return fail_at(w, node, path, "missing key \"check\"");
    WITH_KEY(w, node, path, "start_grace", get_duration(w, node_, sub_, &h->start_grace_ms));
    WITH_KEY(w, node, path, "interval", get_duration(w, node_, sub_, &h->interval_ms));
    WITH_KEY(w, node, path, "timeout", get_duration(w, node_, sub_, &h->timeout_ms));
    WITH_KEY(w, node, path, "retries", get_uint(w, node_, sub_, 0, 1000, &h->retries));
    WITH_KEY(w, node, path, "check", parse_health_check(w, node_, sub_, h));
    if (h->interval_ms < 100 || h->timeout_ms < 100)
        return fail_at(w, node, path, "interval and timeout must be at least 100ms");
    return 0;
}

static int parse_depends(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"service", "condition", "timeout", "on_timeout", NULL};
    static const char *const conditions[] = {"started", "healthy", "ready", NULL};
    size_t n = 0;
    int r = alloc_for_sequence(w, node, path, sizeof *svc->depends, (void **)&svc->depends, &n);
    for (size_t i = 0; r == 0 && i < n; i++) {
        yaml_node_t *item = NULL;
        cleanup_free char *item_path = NULL;
        if ((r = sequence_item(w, node, path, i, &item, &item_path)) < 0)
            return r;
        if ((r = check_mapping(w, item, item_path, keys)) < 0)
            return r;
        obi_dependency *dep = &svc->depends[svc->depend_count++];
        dep->cond = OBI_DEPEND_HEALTHY; /* zlayer's default */
        dep->timeout_ms = OBI_DEPEND_DEFAULT_TIMEOUT_MS;
        if (!map_get(w, item, "service"))
            return fail_at(w, item, item_path, "missing key \"service\"");
        int cond = OBI_DEPEND_HEALTHY, action = 0;
        WITH_KEY(w, item, item_path, "service", get_nonempty_string(w, node_, sub_, &dep->service));
        WITH_KEY(w, item, item_path, "condition", get_choice(w, node_, sub_, conditions, &cond));
        WITH_KEY(w, item, item_path, "timeout", get_duration(w, node_, sub_, &dep->timeout_ms));
        WITH_KEY(w, item, item_path, "on_timeout",
                 get_choice(w, node_, sub_, FAILURE_ACTIONS, &action));
        dep->cond = (obi_depend_condition)cond;
        dep->on_timeout = (obi_failure_action)action;
        if (!(dep->condition = strdup(conditions[cond])))
            return obi_error_oom(w->err);
    }
    return r;
}

/* init.steps[i].with for the step's action. */
static int parse_init_with(walker *w, yaml_node_t *node, const char *path, obi_init_step *step,
                           uint64_t *with_timeout_ms)
{
    static const char *const keys[][4] = {
        [OBI_INIT_WAIT_TCP] = {"host", "port", "timeout", NULL},
        [OBI_INIT_WAIT_HTTP] = {"url", "expect_status", "timeout", NULL},
        [OBI_INIT_RUN] = {"command", "timeout", NULL, NULL},
    };
    static const char *const required[] = {
        [OBI_INIT_WAIT_TCP] = "port", [OBI_INIT_WAIT_HTTP] = "url", [OBI_INIT_RUN] = "command"};
    int r = check_mapping(w, node, path, keys[step->action]);
    if (r < 0)
        return r;
    if (!map_get(w, node, required[step->action]))
        return fail_at(w, node, path, "missing key \"%s\"", required[step->action]);
    unsigned seconds = 0;
    WITH_KEY(w, node, path, "host", get_nonempty_string(w, node_, sub_, &step->host));
    WITH_KEY(w, node, path, "port", get_uint(w, node_, sub_, 1, 65535, &step->port));
    WITH_KEY(w, node, path, "url", get_nonempty_string(w, node_, sub_, &step->url));
    WITH_KEY(w, node, path, "expect_status",
             get_uint(w, node_, sub_, 100, 599, &step->expect_status));
    WITH_KEY(w, node, path, "command", get_nonempty_string(w, node_, sub_, &step->command));
    WITH_KEY(w, node, path, "timeout", get_uint(w, node_, sub_, 1, 86400, &seconds));
    if (step->url && strncmp(step->url, "http://", 7))
        return fail_at(w, map_get(w, node, "url"), path, "url: only http:// URLs, got \"%s\"",
                       step->url);
    if (step->action == OBI_INIT_WAIT_TCP && !step->host && !(step->host = strdup("127.0.0.1")))
        return obi_error_oom(w->err);
    *with_timeout_ms = seconds * 1000ULL;
    return 0;
}

static int parse_init(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"steps", NULL};
    static const char *const step_keys[] = {"id",      "uses",       "with", "retry",
                                            "timeout", "on_failure", NULL};
    static const char *const actions[] = {"init.wait_tcp", "init.wait_http", "init.run", NULL};
    int r = check_mapping(w, node, path, keys);
    yaml_node_t *steps = map_get(w, node, "steps");
    if (r < 0 || !steps)
        return r;
    cleanup_free char *steps_path = path_child(path, "steps");
    if (!steps_path)
        return obi_error_oom(w->err);
    size_t n = 0;
    r = alloc_for_sequence(w, steps, steps_path, sizeof *svc->init_steps, (void **)&svc->init_steps,
                           &n);
    for (size_t i = 0; r == 0 && i < n; i++) {
        yaml_node_t *item = NULL;
        cleanup_free char *item_path = NULL;
        if ((r = sequence_item(w, steps, steps_path, i, &item, &item_path)) < 0 ||
            (r = check_mapping(w, item, item_path, step_keys)) < 0)
            return r;
        obi_init_step *step = &svc->init_steps[svc->init_step_count++];
        for (size_t k = 0; k < 2; k++)
            if (!map_get(w, item, step_keys[k]))
                return fail_at(w, item, item_path, "missing key \"%s\"", step_keys[k]);
        int action = 0, on_failure = 0;
        uint64_t with_timeout = 0, step_timeout = 0;
        WITH_KEY(w, item, item_path, "id", get_nonempty_string(w, node_, sub_, &step->id));
        WITH_KEY(w, item, item_path, "uses", get_choice(w, node_, sub_, actions, &action));
        step->action = (obi_init_action)action;
        yaml_node_t *with = map_get(w, item, "with");
        if (!with)
            return fail_at(w, item, item_path, "missing key \"with\" (the step's parameters)");
        WITH_KEY(w, item, item_path, "with", parse_init_with(w, node_, sub_, step, &with_timeout));
        WITH_KEY(w, item, item_path, "retry", get_uint(w, node_, sub_, 0, 1000, &step->retry));
        WITH_KEY(w, item, item_path, "timeout", get_duration(w, node_, sub_, &step_timeout));
        WITH_KEY(w, item, item_path, "on_failure",
                 get_choice(w, node_, sub_, FAILURE_ACTIONS, &on_failure));
        step->on_failure = (obi_failure_action)on_failure;
        /* zlayer: the action's own timeout (with.timeout, default 30 s for waits, 300 s for
         * run) inside the step's (default 300 s): the smaller one applies */
        uint64_t action_ms = with_timeout ? with_timeout : action == OBI_INIT_RUN ? 300000 : 30000;
        uint64_t limit_ms = step_timeout ? step_timeout : 300000;
        step->timeout_ms = action_ms < limit_ms ? action_ms : limit_ms;
    }
    return r;
}

static int parse_action_map(walker *w, yaml_node_t *node, const char *path,
                            const char *const *names, int *out)
{
    static const char *const keys[] = {"action", NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    WITH_KEY(w, node, path, "action", get_choice(w, node_, sub_, names, out));
    return 0;
}

static int parse_errors(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"on_init_failure", "on_panic", NULL};
    static const char *const init_actions[] = {"fail", "restart", "backoff", NULL};
    static const char *const panic_actions[] = {"restart", "shutdown", "isolate", NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    int init = 0, panic = 0;
    WITH_KEY(w, node, path, "on_init_failure",
             parse_action_map(w, node_, sub_, init_actions, &init));
    WITH_KEY(w, node, path, "on_panic", parse_action_map(w, node_, sub_, panic_actions, &panic));
    svc->on_init_failure = (obi_init_failure)init;
    svc->on_panic = (obi_panic_action)panic;
    return 0;
}

static int parse_restart_policy(walker *w, yaml_node_t *node, const char *path, obi_service *svc)
{
    static const char *const keys[] = {"kind", "max_attempts", "delay", NULL};
    static const char *const kinds[] = {"no", "always", "unless_stopped", "on_failure", NULL};
    int r = check_mapping(w, node, path, keys);
    if (r < 0)
        return r;
    if (!map_get(w, node, "kind"))
        return fail_at(w, node, path, "missing key \"kind\"");
    int kind = 0;
    obi_restart_policy *p = &svc->restart_policy;
    WITH_KEY(w, node, path, "kind", get_choice(w, node_, sub_, kinds, &kind));
    WITH_KEY(w, node, path, "max_attempts", get_uint(w, node_, sub_, 0, 1000000, &p->max_attempts));
    WITH_KEY(w, node, path, "delay", get_duration(w, node_, sub_, &p->delay_ms));
    p->kind = (obi_restart_kind)kind;
    svc->has_restart_policy = true;
    return 0;
}

/* For service_clear. */
static void supervisor_keys_clear(obi_service *svc)
{
    free(svc->health.url);
    free(svc->health.command);
    for (size_t i = 0; i < svc->init_step_count; i++) {
        free(svc->init_steps[i].id);
        free(svc->init_steps[i].host);
        free(svc->init_steps[i].url);
        free(svc->init_steps[i].command);
    }
    free(svc->init_steps);
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
    {"cap_add", parse_capabilities},
    {"cap_drop", parse_cap_drop},
    {"privileged", parse_privileged},
    {"host_network", parse_host_network},
    {"network_mode", parse_network_mode},
    {"hostname", parse_hostname},
    {"scale", parse_scale},
    {"depends", parse_depends},
    {"endpoints", parse_endpoints},
    {"port_mappings", parse_port_mappings},
    {"ulimits", parse_ulimits},
    {"dns", parse_dns},
    {"cgroup_parent", parse_cgroup_parent},
    {"labels", parse_labels},
    {"sysctls", parse_sysctls},
    {"user", parse_user},
    {"extra_groups", parse_extra_groups},
    {"read_only_root_fs", parse_read_only_root_fs},
    {"security_opt", parse_security_opt},
    {"stop_signal", parse_stop_signal},
    {"stop_grace_period", parse_stop_grace_period},
    {"lifecycle", parse_lifecycle},
    {"extra_hosts", parse_extra_hosts},
    {"pid_mode", parse_pid_mode},
    {"ipc_mode", parse_ipc_mode},
    {"userns_mode", parse_userns_mode},
    {"init_container", parse_init_container},
    {"service_type", parse_service_type},
    {"replica_groups", parse_replica_groups},
    {"health", parse_health},
    {"init", parse_init},
    {"errors", parse_errors},
    {"restart_policy", parse_restart_policy},
};

/* The keys of SERVICE_NOOPS present in node: checked, and a notice each. */
static int parse_service_noops(walker *w, yaml_node_t *node, const char *path)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(SERVICE_NOOPS); i++) {
        yaml_node_t *value = map_get(w, node, SERVICE_NOOPS[i].key);
        if (!value)
            continue;
        cleanup_free char *sub = path_child(path, SERVICE_NOOPS[i].key);
        if (!sub)
            return obi_error_oom(w->err);
        int r = check_shape(w, value, sub, SERVICE_NOOPS[i].sh);
        if (r == 0 && SERVICE_NOOPS[i].why)
            r = add_notice(w, sub, SERVICE_NOOPS[i].why);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The host's PID or IPC namespace cannot be used from a user namespace (the kernel lets only
 * the owner of those namespaces' user namespace mount their /proc and mqueue): Docker asks for
 * --userns=host then too. */
static int check_host_namespaces(walker *w, yaml_node_t *node, const char *path,
                                 const obi_service *svc)
{
    static const char *const keys[] = {"pid_mode", "ipc_mode"};
    const obi_namespace_mode modes[] = {svc->pid_mode, svc->ipc_mode};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(keys); i++) {
        if (modes[i] != OBI_NAMESPACE_HOST || svc->privileged || svc->userns_host)
            continue;
        cleanup_free char *sub = path_child(path, keys[i]);
        return fail_at(w, map_get(w, node, keys[i]), sub ? sub : path,
                       "host needs userns_mode: host or privileged: true (a replica's user "
                       "namespace cannot mount the host's %s)",
                       i == 0 ? "/proc" : "IPC namespace's mqueue");
    }
    return 0;
}

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
    if ((r = parse_service_noops(w, node, path)) < 0)
        return r;
    if (svc->dns && svc->host_network &&
        (r = add_notice(w, path,
                        "dns with the host's network: the replica uses the host's resolv.conf "
                        "(as zlayer does), dns ignored")) < 0)
        return r;
    if (svc->port_mapping_count && svc->host_network &&
        (r = add_notice(w, path,
                        "port_mappings with the host's network: the replica listens on the host "
                        "itself, nothing is published (as Docker does)")) < 0)
        return r;
    if (svc->extra_hosts && svc->host_network &&
        (r = add_notice(w, path,
                        "extra_hosts with the host's network: the replica uses the image's "
                        "/etc/hosts (as zlayer does), extra_hosts ignored")) < 0)
        return r;
    if ((r = check_host_namespaces(w, node, path, svc)) < 0)
        return r;
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

/* The endpoints of an external (zlayer's proxy backends): the service endpoint's fields. */
static const shape ENDPOINT_SHAPE = {
    .kind = SHAPE_MAP,
    .fields =
        (const shape[]){
            {.key = "name", .kind = SHAPE_STRING, .required = true},
            {.key = "protocol",
             .kind = SHAPE_ENUM,
             .required = true,
             .values = (const char *const[]){"http", "https", "tcp", "udp", "websocket", NULL}},
            {.key = "port", .kind = SHAPE_UINT, .max = 65535, .required = true},
            {.key = "target_port", .kind = SHAPE_UINT, .max = 65535},
            {.key = "path", .kind = SHAPE_STRING},
            {.key = "host", .kind = SHAPE_STRING},
            {.key = "expose",
             .kind = SHAPE_ENUM,
             .values = (const char *const[]){"public", "internal", NULL}},
            {.key = "stream", .kind = SHAPE_ANY},
            {.key = "target_role", .kind = SHAPE_STRING},
            {.key = "tunnel", .kind = SHAPE_ANY},
            {0},
        },
};

/* Top-level keys besides version, deployment and services: all cluster-side in zlayer. */
static const struct noop_key ROOT_NOOPS[] = {
    {"externals",
     &(const shape){
         .kind = SHAPE_DICT,
         .fields =
             (const shape[]){
                 {.kind = SHAPE_MAP,
                  .fields =
                      (const shape[]){
                          {.key = "backends",
                           .kind = SHAPE_LIST,
                           .required = true,
                           .fields = &STRING_SHAPE},
                          {.key = "endpoints", .kind = SHAPE_LIST, .fields = &ENDPOINT_SHAPE},
                          {.key = "health", .kind = SHAPE_ANY},
                          {0},
                      }},
             }},
     "backends outside the deployment for zlayer's reverse proxy; ocibuild has no proxy, "
     "ignored"},
    {"tunnels",
     &(const shape){
         .kind = SHAPE_DICT,
         .fields =
             (const shape[]){
                 {.kind = SHAPE_MAP,
                  .fields =
                      (const shape[]){
                          {.key = "from", .kind = SHAPE_STRING, .required = true},
                          {.key = "to", .kind = SHAPE_STRING, .required = true},
                          {.key = "local_port", .kind = SHAPE_UINT, .max = 65535, .required = true},
                          {.key = "remote_port",
                           .kind = SHAPE_UINT,
                           .max = 65535,
                           .required = true},
                          {.key = "protocol",
                           .kind = SHAPE_ENUM,
                           .values = (const char *const[]){"tcp", "udp", NULL}},
                          {.key = "expose",
                           .kind = SHAPE_ENUM,
                           .values = (const char *const[]){"public", "internal", NULL}},
                          {0},
                      }},
             }},
     "zlayer's tunnels between nodes; one node here, ignored"},
    {"api",
     &(const shape){.kind = SHAPE_MAP,
                    .open = true, /* zlayer's ApiSpec takes unknown keys */
                    .fields =
                        (const shape[]){
                            {.key = "enabled", .kind = SHAPE_BOOL},
                            {.key = "bind", .kind = SHAPE_STRING},
                            {.key = "jwt_secret", .kind = SHAPE_STRING},
                            {.key = "swagger", .kind = SHAPE_BOOL},
                            {0},
                        }},
     "zlayer's API server; ocibuild's front ends are its CLI and daemon, ignored"},
};

static bool node_is_null(const yaml_node_t *node)
{
    const char *text = scalar_text(node);
    return text && node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (!*text || !strcmp(text, "~") || !strcmp(text, "null") || !strcmp(text, "Null") ||
            !strcmp(text, "NULL"));
}

static int parse_root(walker *w, yaml_node_t *root, obi_deployment *d)
{
    static const char *const keys[] = {"version", "deployment", "services", "externals",
                                       "tunnels", "api",        NULL};
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
    for (size_t i = 0; i < OBI_ARRAY_SIZE(ROOT_NOOPS); i++) {
        yaml_node_t *value = map_get(w, root, ROOT_NOOPS[i].key);
        if (value && ((r = check_shape(w, value, ROOT_NOOPS[i].key, ROOT_NOOPS[i].sh)) < 0 ||
                      (r = add_notice(w, ROOT_NOOPS[i].key, ROOT_NOOPS[i].why)) < 0))
            return r;
    }
    /* no services (absent, null or {}): an empty deployment, as in zlayer */
    if (!services || node_is_null(services))
        return 0;
    if ((r = check_mapping(w, services, "services", NULL)) < 0)
        return r;
    size_t n = (size_t)(services->data.mapping.pairs.top - services->data.mapping.pairs.start);
    d->services = calloc(n ? n : 1, sizeof *d->services);
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
    walker w = {&doc, source, err, base_dir, NULL};
    obi_deployment *d = calloc(1, sizeof *d);
    if (!d) {
        r = obi_error_oom(err);
    } else if (!root) {
        r = obi_error_set(err, -EINVAL, "%s: empty document", source);
    } else {
        w.notices = &d->notices;
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

static void pairs_free(obi_service_env_var *vars, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(vars[i].name);
        free(vars[i].value);
    }
    free(vars);
}

static void service_clear(obi_service *svc)
{
    free(svc->name);
    free(svc->schedule);
    free(svc->image_path);
    free(svc->image_tag);
    free(svc->image_rootfs);
    obi_image_ref_free(svc->image_ref);
    obi_strv_free(svc->entrypoint);
    obi_strv_free(svc->args);
    free(svc->workdir);
    pairs_free(svc->env, svc->env_count);
    free(svc->gpu.vendor_name);
    free(svc->gpu.mps_pipe_dir);
    free(svc->gpu.mps_log_dir);
    free(svc->gpu.time_slicing_config_path);
    free(svc->gpu.model);
    free(svc->cpuset);
    obi_strv_free(svc->cap_drop);
    free(svc->ulimits);
    obi_strv_free(svc->dns);
    free(svc->cgroup_parent);
    pairs_free(svc->labels, svc->label_count);
    pairs_free(svc->sysctls, svc->sysctl_count);
    free(svc->user);
    obi_strv_free(svc->extra_groups);
    obi_strv_free(svc->extra_hosts);
    for (size_t i = 0; i < svc->endpoint_count; i++) {
        free(svc->endpoints[i].name);
        free(svc->endpoints[i].path);
        free(svc->endpoints[i].host);
    }
    free(svc->endpoints);
    for (size_t i = 0; i < svc->port_mapping_count; i++)
        free(svc->port_mappings[i].host_ip);
    free(svc->port_mappings);
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
    supervisor_keys_clear(svc);
}

void obi_deployment_free(obi_deployment *deployment)
{
    if (!deployment)
        return;
    for (size_t i = 0; i < deployment->service_count; i++)
        service_clear(&deployment->services[i]);
    free(deployment->services);
    free(deployment->name);
    obi_strv_free(deployment->notices);
    free(deployment);
}

const char **obi_deployment_notices(const obi_deployment *deployment, const char *service)
{
    size_t n = 0;
    while (deployment->notices && deployment->notices[n])
        n++;
    const char **out = calloc(n + 1, sizeof *out);
    if (!out)
        return NULL;
    size_t len = service ? strlen(service) : 0;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        const char *notice = deployment->notices[i];
        bool about_service = !strncmp(notice, "services.", 9);
        if (!service || !about_service ||
            (!strncmp(notice + 9, service, len) && notice[9 + len] &&
             strchr(".:", notice[9 + len])))
            out[count++] = notice;
    }
    return out;
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
