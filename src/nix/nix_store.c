/*
 * A derivation's inputs from the local Nix store (see include/ocibuild/nix_store.h): input
 * paths from the .drv and its input .drv files, the closure (read from Nix's database, else
 * from `nix-store -q -R`: process.h, no shell), and the import into castore through ingest.h.
 * derivation_request.c consumes the resulting nodes; the nix-build command strings the steps
 * together.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/ingest.h"
#include "ocibuild/json_util.h"
#include "ocibuild/nar.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/process.h"
#include "ocibuild/strv.h"

#define NIX_STORE_MAX_OUTPUT (64u * 1024 * 1024)
#define NIX_STATE_DIR_DEFAULT "/nix/var/nix"

/* ---- store paths ---- */

int obi_nix_store_path_parse(const char *path, const char **basename, obi_error **err)
{
    const char *prefix = OBI_NIX_STORE_DIR "/";
    size_t prefix_len = strlen(prefix);
    if (strncmp(path, prefix, prefix_len) != 0)
        return obi_error_set(err, -EINVAL, "'%s' is not in %s", path, OBI_NIX_STORE_DIR);
    const char *base = path + prefix_len;
    size_t len = strlen(base);
    if (len < OBI_NIX_HASH_PART_LEN + 2 || base[OBI_NIX_HASH_PART_LEN] != '-')
        return obi_error_set(err, -EINVAL,
                             "'%s' is not a store path (expected %s/<32 hash chars>-<name>)", path,
                             OBI_NIX_STORE_DIR);
    if (strchr(base, '/'))
        return obi_error_set(err, -EINVAL, "'%s' is not a store path (it has a '/' after %s/)",
                             path, OBI_NIX_STORE_DIR);
    uint8_t digest[20];
    cleanup_error obi_error *decode_err = NULL;
    if (obi_nixbase32_decode(base, OBI_NIX_HASH_PART_LEN, digest, sizeof digest, &decode_err) < 0)
        return obi_error_set(err, -EINVAL, "'%s' is not a store path: hash part: %s", path,
                             decode_err->message);
    /* the name: Nix 2.8's checkName */
    const char *name = base + OBI_NIX_HASH_PART_LEN + 1;
    if (strlen(name) > OBI_NIX_NAME_MAX)
        return obi_error_set(err, -EINVAL,
                             "'%s' is not a store path: its name is longer than %d characters",
                             path, OBI_NIX_NAME_MAX);
    size_t good = strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                               "+-._?=");
    if (name[good])
        return obi_error_set(err, -EINVAL,
                             "'%s' is not a store path: illegal character '%c' in its name", path,
                             name[good]);
    *basename = base;
    return 0;
}

/* ---- input paths ---- */

char *obi_nix_store_real_path(const char *store_dir, const char *path)
{
    if (!store_dir)
        return strdup(path);
    const char *base = strrchr(path, '/');
    char *real = NULL;
    if (asprintf(&real, "%s/%s", store_dir, base ? base + 1 : path) < 0)
        return NULL;
    return real;
}

static int add_input_drv_outputs(obi_strv_builder *set, const char *store_dir,
                                 const obi_derivation_input *in, obi_error **err)
{
    cleanup_derivation obi_derivation *input = NULL;
    cleanup_free char *file = obi_nix_store_real_path(store_dir, in->drv_path);
    if (!file)
        return obi_error_oom(err);
    int r = obi_derivation_read_file(file, &input, err);
    if (r < 0)
        return obi_error_prefix(err, r, "input derivation");
    for (size_t i = 0; i < in->n_outputs; i++) {
        const obi_derivation_output *o = obi_derivation_find_output(input, in->outputs[i]);
        if (!o)
            return obi_error_set(err, -EINVAL, "input derivation %s has no output '%s'",
                                 in->drv_path, in->outputs[i]);
        if (!*o->path)
            return obi_error_set(err, -ENOTSUP,
                                 "input derivation %s: output '%s' has no path (floating "
                                 "content-addressed derivations are not supported)",
                                 in->drv_path, in->outputs[i]);
        if (obi_strv_builder_add(set, o->path) < 0)
            return obi_error_oom(err);
    }
    return 0;
}

int obi_derivation_input_paths(const obi_derivation *drv, const char *store_dir, char ***paths_out,
                               size_t *n_out, obi_error **err)
{
    cleanup_strv_builder obi_strv_builder set = {0};
    for (size_t i = 0; i < drv->n_input_srcs; i++)
        if (obi_strv_builder_add(&set, drv->input_srcs[i]) < 0)
            return obi_error_oom(err);
    for (size_t i = 0; i < drv->n_input_drvs; i++) {
        int r = add_input_drv_outputs(&set, store_dir, &drv->input_drvs[i], err);
        if (r < 0)
            return r;
    }
    obi_strv_builder_sort_unique(&set);
    size_t n = 0;
    char **paths = obi_strv_builder_steal(&set, &n);
    if (!paths)
        return obi_error_oom(err);
    *paths_out = paths;
    *n_out = n;
    return 0;
}

/* ---- closure ---- */

/* The last few lines of a command's output, for error messages. */
static const char *output_tail(const char *output)
{
    size_t len = strlen(output);
    while (len > 0 && output[len - 1] == '\n')
        len--;
    const char *p = output + len;
    int lines = 0;
    while (p > output && lines < 3) {
        p--;
        if (*p == '\n')
            lines++;
    }
    return *p == '\n' ? p + 1 : p;
}

/* Runs nix-store -q -R and adds every store path it prints to set. */
static int run_closure(const char *nix_store, char *const *paths, size_t n_paths,
                       obi_strv_builder *set, obi_error **err)
{
    const char *program = nix_store ? nix_store : "nix-store";
    cleanup_free char **argv = calloc(n_paths + 4, sizeof *argv);
    if (!argv)
        return obi_error_oom(err);
    argv[0] = (char *)program;
    argv[1] = (char *)"--query";
    argv[2] = (char *)"--requisites";
    for (size_t i = 0; i < n_paths; i++)
        argv[3 + i] = paths[i];
    cleanup_free char *output = NULL;
    int exit_code = 0;
    /* stderr merged so that a failure can be explained; warnings are not store paths and are
     * skipped below */
    int r = obi_run_capture(argv, true, NIX_STORE_MAX_OUTPUT, &output, &exit_code, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s --query --requisites", program);
    if (exit_code != 0)
        return obi_error_set(err, -EIO, "%s --query --requisites failed (exit %d): %s", program,
                             exit_code, output_tail(output));
    for (char *line = output, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp(line, OBI_NIX_STORE_DIR "/", strlen(OBI_NIX_STORE_DIR "/")) != 0)
            continue;
        const char *base;
        r = obi_nix_store_path_parse(line, &base, err);
        if (r < 0)
            return obi_error_prefix(err, r, "%s --query --requisites", program);
        if (obi_strv_builder_add(set, line) < 0)
            return obi_error_oom(err);
    }
    return 0;
}

/* Nix 2.x's database schema: ValidPaths (id, path, ...) and Refs (referrer, reference). */
#define NIX_DB_SCHEMA "10"
#define NIX_DB_BUSY_MS 200

static void sqlite_closep(sqlite3 **db)
{
    if (*db)
        sqlite3_close(*db);
}

static void sqlite_finalizep(sqlite3_stmt **stmt)
{
    sqlite3_finalize(*stmt);
}

/* Adds the closure of path (valid in db) to set; 0 when path is not valid or the query fails. */
static int db_path_closure(sqlite3 *db, const char *path, obi_strv_builder *set)
{
    static const char query[] =
        "WITH RECURSIVE closure(id) AS (SELECT id FROM ValidPaths WHERE path = ?1"
        " UNION SELECT reference FROM Refs JOIN closure ON referrer = closure.id)"
        " SELECT path FROM ValidPaths WHERE id IN closure";
    __attribute__((cleanup(sqlite_finalizep))) sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, query, -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 1, path, -1, SQLITE_STATIC) != SQLITE_OK)
        return 0;
    bool found = false;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *member = (const char *)sqlite3_column_text(stmt, 0);
        const char *base;
        cleanup_error obi_error *ignored = NULL;
        if (!member || obi_nix_store_path_parse(member, &base, &ignored) < 0)
            return 0;
        found = found || strcmp(member, path) == 0;
        if (obi_strv_builder_add(set, member) < 0)
            return -ENOMEM;
    }
    return rc == SQLITE_DONE && found ? 1 : 0;
}

int obi_nix_db_closure(const char *db_dir, char *const *paths, size_t n_paths, char ***closure_out,
                       size_t *n_out, obi_error **err)
{
    cleanup_free char *schema_file = obi_path_join(db_dir, "schema");
    cleanup_free char *db_file = obi_path_join(db_dir, "db.sqlite");
    if (!schema_file || !db_file)
        return obi_error_oom(err);
    cleanup_free char *schema = NULL;
    size_t len = 0;
    cleanup_error obi_error *ignored = NULL;
    if (obi_read_file(schema_file, 64, &schema, &len, &ignored) < 0)
        return 0;
    while (len > 0 && (schema[len - 1] == '\n' || schema[len - 1] == ' '))
        schema[--len] = '\0';
    if (strcmp(schema, NIX_DB_SCHEMA) != 0)
        return 0;
    __attribute__((cleanup(sqlite_closep))) sqlite3 *db = NULL;
    if (sqlite3_open_v2(db_file, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        return 0;
    sqlite3_busy_timeout(db, NIX_DB_BUSY_MS);
    /* one read transaction: a snapshot of what Nix has registered */
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return 0;
    cleanup_strv_builder obi_strv_builder set = {0};
    for (size_t i = 0; i < n_paths; i++) {
        int r = db_path_closure(db, paths[i], &set);
        if (r < 0)
            return obi_error_oom(err);
        if (r == 0)
            return 0;
    }
    obi_strv_builder_sort_unique(&set);
    size_t n = 0;
    char **closure = obi_strv_builder_steal(&set, &n);
    if (!closure)
        return obi_error_oom(err);
    *closure_out = closure;
    *n_out = n;
    return 1;
}

/* Where the local Nix store keeps its database, as Nix finds it. */
static char *default_db_dir(void)
{
    const char *state = getenv("NIX_STATE_DIR");
    return obi_path_join(state && *state ? state : NIX_STATE_DIR_DEFAULT, "db");
}

int obi_nix_store_closure(const char *nix_store, char *const *paths, size_t n_paths,
                          char ***closure_out, size_t *n_out, obi_error **err)
{
    if (!nix_store && n_paths > 0) { /* the local store: its database first */
        cleanup_free char *db_dir = default_db_dir();
        if (!db_dir)
            return obi_error_oom(err);
        int r = obi_nix_db_closure(db_dir, paths, n_paths, closure_out, n_out, err);
        if (r != 0)
            return r < 0 ? r : 0;
    }
    cleanup_strv_builder obi_strv_builder set = {0};
    if (n_paths > 0) {
        int r = run_closure(nix_store, paths, n_paths, &set, err);
        if (r < 0)
            return r;
    }
    obi_strv_builder_sort_unique(&set);
    size_t n = 0;
    char **closure = obi_strv_builder_steal(&set, &n);
    if (!closure)
        return obi_error_oom(err);
    *closure_out = closure;
    *n_out = n;
    return 0;
}

/* ---- import ---- */

void obi_nix_nodes_free(obi_node *nodes, size_t n)
{
    if (!nodes)
        return;
    for (size_t i = 0; i < n; i++)
        obi_node_clear(&nodes[i]);
    free(nodes);
}

int obi_nix_import_paths(obi_blob_service *blobs, obi_directory_service *directories,
                         char *const *paths, size_t n_paths, obi_node **nodes_out, obi_error **err)
{
    obi_node *nodes = calloc(n_paths ? n_paths : 1, sizeof *nodes);
    if (!nodes)
        return obi_error_oom(err);
    for (size_t i = 0; i < n_paths; i++) {
        const char *base;
        int r = obi_nix_store_path_parse(paths[i], &base, err);
        if (r >= 0) {
            obi_ingest_options options = {.name = base, .refscan = NULL};
            r = obi_ingest_path(blobs, directories, paths[i], &options, &nodes[i], err);
        }
        if (r < 0) {
            obi_nix_nodes_free(nodes, i);
            return obi_error_prefix(err, r, "import %s", paths[i]);
        }
    }
    *nodes_out = nodes;
    return 0;
}

int obi_derivation_import_inputs(obi_blob_service *blobs, obi_directory_service *directories,
                                 const char *nix_store, const obi_derivation *drv,
                                 obi_node **nodes_out, size_t *n_out, obi_error **err)
{
    cleanup_strv char **inputs = NULL, **closure = NULL;
    size_t n_inputs = 0, n_closure = 0;
    int r = obi_derivation_input_paths(drv, NULL, &inputs, &n_inputs, err);
    if (r >= 0)
        r = obi_nix_store_closure(nix_store, inputs, n_inputs, &closure, &n_closure, err);
    if (r >= 0)
        r = obi_nix_import_paths(blobs, directories, closure, n_closure, nodes_out, err);
    if (r < 0)
        return r;
    *n_out = n_closure;
    return 0;
}

/* ---- what Nix's database says ---- */

void obi_nix_path_infos_free(obi_nix_path_info **infos, size_t n)
{
    if (!infos)
        return;
    for (size_t i = 0; i < n; i++)
        obi_nix_path_info_free(infos[i]);
    free(infos);
}

/* "sha256-<base64>" (SRI, as `nix path-info --json` prints it) or "sha256:<nixbase32>". */
static int parse_any_nar_hash(const char *text, uint8_t out[OBI_SHA256_LEN], obi_error **err)
{
    if (strncmp(text, "sha256-", 7) == 0) {
        cleanup_free uint8_t *bytes = NULL;
        size_t len = 0;
        int r = obi_base64_decode(text + 7, strlen(text + 7), &bytes, &len, err);
        if (r < 0)
            return r;
        if (len != OBI_SHA256_LEN)
            return obi_error_set(err, -EINVAL, "narHash '%s' is not a SHA-256", text);
        memcpy(out, bytes, OBI_SHA256_LEN);
        return 0;
    }
    if (strncmp(text, "sha256:", 7) == 0)
        return obi_nixbase32_decode(text + 7, strlen(text + 7), out, OBI_SHA256_LEN, err);
    return obi_error_set(err, -EINVAL, "narHash '%s' is not a SHA-256", text);
}

static int info_from_nix_json(const json_t *entry, obi_nix_path_info **out, obi_error **err)
{
    const json_t *path = json_object_get(entry, "path");
    const json_t *hash = json_object_get(entry, "narHash");
    const json_t *size = json_object_get(entry, "narSize");
    const json_t *refs = json_object_get(entry, "references");
    const json_t *deriver = json_object_get(entry, "deriver");
    const json_t *ca = json_object_get(entry, "ca");
    if (!json_is_string(path))
        return obi_error_set(err, -EINVAL, "an entry without a path");
    if (json_is_false(json_object_get(entry, "valid")) || !json_is_string(hash))
        return obi_error_set(err, -ENOENT, "path '%s' is not valid", json_string_value(path));
    cleanup_nix_path_info obi_nix_path_info *info = calloc(1, sizeof *info);
    if (!info || !(info->path = strdup(json_string_value(path))) ||
        !(info->references = calloc(json_array_size(refs) + 1, sizeof *info->references)))
        return obi_error_oom(err);
    int r = parse_any_nar_hash(json_string_value(hash), info->nar.sha256, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", info->path);
    info->nar.size = json_is_integer(size) ? (uint64_t)json_integer_value(size) : 0;
    for (size_t i = 0; i < json_array_size(refs); i++) {
        const char *ref = json_string_value(json_array_get(refs, i));
        if (!ref || !(info->references[info->n_references++] = strdup(ref)))
            return obi_error_oom(err);
    }
    if (info->n_references > 1)
        qsort(info->references, info->n_references, sizeof *info->references,
              obi_strv_item_compare);
    if ((json_is_string(deriver) && !(info->deriver = strdup(json_string_value(deriver)))) ||
        (json_is_string(ca) && !(info->ca = strdup(json_string_value(ca)))))
        return obi_error_oom(err);
    *out = steal_pointer(&info);
    return 0;
}

int obi_nix_store_query_infos(const char *nix, char *const *paths, size_t n_paths, bool recursive,
                              obi_nix_path_info ***infos_out, size_t *n_out, obi_error **err)
{
    const char *program = nix ? nix : "nix";
    cleanup_free char **argv = calloc(n_paths + 8, sizeof *argv);
    if (!argv)
        return obi_error_oom(err);
    size_t argc = 0;
    argv[argc++] = (char *)program;
    argv[argc++] = (char *)"--extra-experimental-features";
    argv[argc++] = (char *)"nix-command";
    argv[argc++] = (char *)"path-info";
    argv[argc++] = (char *)"--json";
    if (recursive)
        argv[argc++] = (char *)"--recursive";
    for (size_t i = 0; i < n_paths; i++)
        argv[argc++] = paths[i];
    cleanup_free char *output = NULL;
    int exit_code = 0;
    int r = obi_run_capture(argv, false, NIX_STORE_MAX_OUTPUT, &output, &exit_code, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s path-info", program);
    if (exit_code != 0)
        return obi_error_set(err, -EIO, "%s path-info failed (exit %d) for %s%s", program,
                             exit_code, n_paths ? paths[0] : "", n_paths > 1 ? " ..." : "");
    json_error_t json_err;
    cleanup_json json_t *json = json_loads(output, 0, &json_err);
    if (!json_is_array(json))
        return obi_error_set(err, -EIO, "%s path-info: not a JSON list: %s", program,
                             json ? "" : json_err.text);
    size_t n = json_array_size(json);
    obi_nix_path_info **infos = calloc(n + 1, sizeof *infos);
    if (!infos)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++) {
        r = info_from_nix_json(json_array_get(json, i), &infos[i], err);
        if (r < 0) {
            obi_nix_path_infos_free(infos, i);
            return obi_error_prefix(err, r, "%s path-info", program);
        }
    }
    if (n > 1)
        qsort(infos, n, sizeof *infos, obi_nix_path_info_ptr_compare);
    *infos_out = infos;
    *n_out = n;
    return 0;
}

/* ---- registering paths: nix-store --import ---- */

#define EXPORT_MAGIC 0x4558494eu

typedef struct export_writer {
    int fd;
    obi_buf buf;
} export_writer;

static int export_flush(export_writer *w, obi_error **err)
{
    size_t done = 0;
    while (done < w->buf.len) {
        ssize_t n = send(w->fd, w->buf.data + done, w->buf.len - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return obi_error_set_errno(err, errno, "writing to nix-store --import");
        done += (size_t)n;
    }
    w->buf.len = 0;
    return 0;
}

static int export_bytes(void *ctx, const void *data, size_t len, obi_error **err)
{
    export_writer *w = ctx;
    if (obi_buf_append(&w->buf, data, len) < 0)
        return obi_error_oom(err);
    return w->buf.len >= 65536 ? export_flush(w, err) : 0;
}

static int export_u64(export_writer *w, uint64_t v, obi_error **err)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    return export_bytes(w, le, 8, err);
}

static int export_string(export_writer *w, const char *s, obi_error **err)
{
    static const uint8_t zeros[8];
    size_t len = strlen(s);
    int r = export_u64(w, len, err);
    if (r >= 0)
        r = export_bytes(w, s, len, err);
    if (r >= 0 && len % 8)
        r = export_bytes(w, zeros, 8 - len % 8, err);
    return r;
}

static int export_path(export_writer *w, obi_blob_service *blobs,
                       obi_directory_service *directories, const obi_nix_path_info *info,
                       obi_error **err)
{
    int r = export_u64(w, 1, err);
    if (r >= 0)
        r = obi_nar_write_node(blobs, directories, &info->node, export_bytes, w, err);
    if (r >= 0)
        r = export_u64(w, EXPORT_MAGIC, err);
    if (r >= 0)
        r = export_string(w, info->path, err);
    if (r >= 0)
        r = export_u64(w, info->n_references, err);
    for (size_t i = 0; r >= 0 && i < info->n_references; i++)
        r = export_string(w, info->references[i], err);
    if (r >= 0)
        r = export_string(w, info->deriver ? info->deriver : "", err);
    if (r >= 0)
        r = export_u64(w, 0, err); /* no signature */
    return r < 0 ? obi_error_prefix(err, r, "export %s", info->path) : 0;
}

/* The last lines of a file holding a command's output, for messages. */
static char *file_tail(int fd)
{
    char text[2048];
    off_t end = lseek(fd, 0, SEEK_END);
    off_t start = end > (off_t)sizeof text - 1 ? end - (off_t)sizeof text + 1 : 0;
    ssize_t n = pread(fd, text, sizeof text - 1, start);
    text[n > 0 ? n : 0] = '\0';
    return strdup(output_tail(text));
}

struct obi_nix_store_importer {
    char *program;
    pid_t pid;
    export_writer w; /* our end of its stdin; -1 once the stream is ended */
    int log;         /* its stdout and stderr */
    int end_error;   /* how ending the stream went (_end_input), reported by _finish */
    obi_error *end_err;
};

int obi_nix_store_importer_start(const char *nix_store, obi_nix_store_importer **out,
                                 obi_error **err)
{
    const char *program = nix_store ? nix_store : "nix-store";
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
        return obi_error_set_errno(err, errno, "socketpair");
    cleanup_close int ours = pair[0], theirs = pair[1];
    cleanup_close int log = memfd_create("nix-store-import", MFD_CLOEXEC);
    if (log < 0)
        return obi_error_set_errno(err, errno, "memfd_create");
    obi_nix_store_importer *imp = calloc(1, sizeof *imp);
    if (!imp || !(imp->program = strdup(program))) {
        free(imp);
        return obi_error_oom(err);
    }
    char *argv[] = {(char *)program, (char *)"--import", NULL};
    obi_spawn_options opts = OBI_SPAWN_OPTIONS_INIT;
    opts.stdin_fd = theirs;
    opts.stdout_fd = log;
    opts.stderr_fd = log;
    int r = obi_spawn(argv, &opts, &imp->pid, err);
    if (r < 0) {
        free(imp->program);
        free(imp);
        return obi_error_prefix(err, r, "%s --import", program);
    }
    imp->w = (export_writer){steal_fd(&ours), OBI_BUF_INIT};
    imp->log = steal_fd(&log);
    *out = imp;
    return 0;
}

int obi_nix_store_importer_add(obi_nix_store_importer *imp, obi_blob_service *blobs,
                               obi_directory_service *directories, const obi_nix_path_info *info,
                               obi_error **err)
{
    if (imp->w.fd < 0)
        return obi_error_set(err, -EPIPE, "%s --import: the stream was ended before %s",
                             imp->program, info->path);
    int r = export_path(&imp->w, blobs, directories, info, err);
    return r < 0 ? r : export_flush(&imp->w, err);
}

/* Ends the stream: the end marker when complete, then our end closed (nix-store reads EOF). */
static void end_stream(obi_nix_store_importer *imp, bool complete)
{
    if (imp->w.fd < 0)
        return;
    if (complete && (imp->end_error = export_u64(&imp->w, 0, &imp->end_err)) >= 0)
        imp->end_error = export_flush(&imp->w, &imp->end_err);
    obi_buf_free(&imp->w.buf);
    close(imp->w.fd);
    imp->w.fd = -1;
}

int obi_nix_store_importer_end_input(obi_nix_store_importer *imp, obi_error **err)
{
    end_stream(imp, true);
    if (imp->end_error >= 0)
        return 0;
    imp->end_error = 0; /* reported here, not again by _finish */
    return obi_error_move(err, &imp->end_err);
}

/* Closes the stream (with its end marker when complete) and waits for nix-store. */
static int importer_end(obi_nix_store_importer *imp, bool complete, obi_error **err)
{
    end_stream(imp, complete);
    cleanup_error obi_error *write_err = steal_pointer(&imp->end_err);
    int r = imp->end_error;
    int status = 0;
    int wr = obi_wait(imp->pid, &status, err);
    int code = wr < 0 ? 0 : obi_wait_exit_code(status);
    if (wr >= 0 && code != 0) {
        cleanup_free char *tail = file_tail(imp->log);
        wr = obi_error_set(err, -EIO, "%s --import failed (exit %d): %s", imp->program, code,
                           tail ? tail : "");
    }
    close(imp->log);
    free(imp->program);
    free(imp);
    if (wr < 0)
        return wr;
    return r < 0 ? obi_error_move(err, &write_err) : 0;
}

int obi_nix_store_importer_finish(obi_nix_store_importer *imp, obi_error **err)
{
    return importer_end(imp, true, err);
}

void obi_nix_store_importer_free(obi_nix_store_importer *imp)
{
    if (!imp)
        return;
    cleanup_error obi_error *ignored = NULL;
    importer_end(imp, false, &ignored);
}

int obi_nix_store_import(obi_blob_service *blobs, obi_directory_service *directories,
                         const char *nix_store, const obi_nix_path_info *const *infos, size_t n,
                         obi_error **err)
{
    if (n == 0)
        return 0;
    obi_nix_store_importer *imp = NULL;
    int r = obi_nix_store_importer_start(nix_store, &imp, err);
    if (r < 0)
        return r;
    cleanup_error obi_error *write_err = NULL;
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = export_path(&imp->w, blobs, directories, infos[i], &write_err);
    if (r < 0) { /* nix-store's own complaint, if it has one, says more than a broken pipe */
        int ended = importer_end(imp, false, err);
        return ended < 0 ? ended : obi_error_move(err, &write_err);
    }
    return importer_end(imp, true, err);
}

/* ---- ordering ---- */

typedef struct topo_paths {
    const obi_nix_path_info **infos;
    size_t n;
    unsigned char *state; /* 0 new, 1 on the stack, 2 done */
    const obi_nix_path_info **sorted;
    size_t n_sorted;
    obi_error **err;
} topo_paths;

static int topo_paths_visit(topo_paths *t, size_t i, unsigned depth)
{
    if (t->state[i] == 2)
        return 0;
    if (t->state[i] == 1 || depth > t->n)
        return obi_error_set(t->err, -ELOOP, "the references of %s form a cycle",
                             t->infos[i]->path);
    t->state[i] = 1;
    for (size_t k = 0; k < t->infos[i]->n_references; k++)
        for (size_t j = 0; j < t->n; j++)
            if (j != i && strcmp(t->infos[j]->path, t->infos[i]->references[k]) == 0) {
                int r = topo_paths_visit(t, j, depth + 1);
                if (r < 0)
                    return r;
            }
    t->state[i] = 2;
    t->sorted[t->n_sorted++] = t->infos[i];
    return 0;
}

int obi_nix_path_infos_sort_topologically(const obi_nix_path_info **infos, size_t n,
                                          obi_error **err)
{
    cleanup_free unsigned char *state = calloc(n + 1, 1);
    cleanup_free const obi_nix_path_info **sorted = calloc(n + 1, sizeof *sorted);
    if (!state || !sorted)
        return obi_error_oom(err);
    topo_paths t = {infos, n, state, sorted, 0, err};
    for (size_t i = 0; i < n; i++) {
        int r = topo_paths_visit(&t, i, 0);
        if (r < 0)
            return r;
    }
    memcpy(infos, sorted, n * sizeof *infos);
    return 0;
}

/* ---- result links ---- */

int obi_nix_store_add_root(const char *nix_store, const char *path, const char *link,
                           obi_error **err)
{
    const char *program = nix_store ? nix_store : "nix-store";
    char *argv[] = {(char *)program,      (char *)"--realise", (char *)path,
                    (char *)"--add-root", (char *)link,        NULL};
    cleanup_free char *output = NULL;
    int exit_code = 0;
    int r = obi_run_capture(argv, true, 64 * 1024, &output, &exit_code, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s --add-root %s", program, link);
    if (exit_code != 0)
        return obi_error_set(err, -EIO, "%s --realise %s --add-root %s failed (exit %d): %s",
                             program, path, link, exit_code, output_tail(output));
    return 0;
}
