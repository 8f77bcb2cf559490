/*
 * The serve protocol's server loop (see include/ocibuild/nix_serve.h): the hello, then one
 * handler per command from a table. Handlers read their request with serve_protocol.h, act on
 * castore and the path-info store, and write their reply; the loop flushes after each command.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/nar.h"
#include "ocibuild/nar_ingest.h"
#include "ocibuild/nix_build.h"
#include "ocibuild/nix_serve.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/serve_protocol.h"
#include "ocibuild/store_roots.h"
#include "ocibuild/strv.h"

typedef struct serve_session {
    const obi_nix_serve_options *opts;
    obi_serve_reader *in;
    obi_serve_writer *out;
    unsigned client_version;
    int in_fd; /* watched for a hangup while a build runs */
} serve_session;

/* ---- path infos ---- */

/* 1 with *info when path is valid here, 0 when not, negative on a broken record. */
static int lookup(serve_session *s, const char *path, obi_nix_path_info **info, obi_error **err)
{
    cleanup_error obi_error *get_err = NULL;
    int r = obi_nix_path_info_get(s->opts->path_infos, path, info, &get_err);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return obi_error_move(err, &get_err);
    return 1;
}

static int lookup_valid(serve_session *s, const char *path, obi_nix_path_info **info,
                        obi_error **err)
{
    int r = lookup(s, path, info, err);
    if (r == 0)
        return obi_error_set(err, -ENOENT, "path '%s' is not valid here", path);
    return r;
}

static obi_serve_path_info *to_serve_info(const obi_nix_path_info *info)
{
    cleanup_serve_path_info obi_serve_path_info *out = obi_serve_path_info_new();
    if (!out || !(out->path = strdup(info->path)))
        return NULL;
    char **refs = calloc(info->n_references + 1, sizeof *refs);
    if (!refs)
        return NULL;
    obi_strv_free(out->references);
    out->references = refs;
    for (size_t i = 0; i < info->n_references; i++) {
        if (!(refs[i] = strdup(info->references[i])))
            return NULL;
        out->n_references++;
    }
    memcpy(out->nar_hash, info->nar.sha256, sizeof out->nar_hash);
    out->nar_size = info->nar.size;
    if (info->ca) {
        free(out->ca);
        if (!(out->ca = strdup(info->ca)))
            return NULL;
    }
    return steal_pointer(&out);
}

/* ---- NARs in and out ---- */

static int nar_to_client(void *ctx, const void *data, size_t len, obi_error **err)
{
    return obi_serve_write_raw(ctx, data, len, err);
}

static int write_nar(serve_session *s, const obi_nix_path_info *info, obi_error **err)
{
    int r = obi_nar_write_node(s->opts->store->blobs, s->opts->store->directories, &info->node,
                               nar_to_client, s->out, err);
    return r < 0 ? obi_error_prefix(err, r, "NAR of %s", info->path) : 0;
}

/* A NAR from the client, at most limit bytes of it (UINT64_MAX: as long as it is). */
typedef struct nar_from_client {
    obi_serve_reader *in;
    uint64_t limit;
} nar_from_client;

static int read_nar(void *ctx, void *buf, size_t len, obi_error **err)
{
    nar_from_client *src = ctx;
    if (len > src->limit)
        return obi_error_set(err, -EINVAL, "the NAR goes on past its narSize");
    src->limit -= len;
    return obi_serve_read_raw(src->in, "NAR", buf, len, err);
}

/* Ingests the NAR that comes next as the contents of claimed->path and records it with the
 * references and content address claimed, but only when its sha256 and size are those claimed
 * (nothing is recorded otherwise). */
static int ingest_path(serve_session *s, const obi_serve_path_info *claimed, obi_error **err)
{
    const char *path = claimed->path;
    const char *base = strrchr(path, '/') + 1;
    nar_from_client src = {s->in, claimed->nar_size};
    cleanup_nix_path_info obi_nix_path_info *info = calloc(1, sizeof *info);
    if (!info || !(info->path = strdup(path)))
        return obi_error_oom(err);
    /* gc held off from the first lookup until the record roots the node (docs/store.md) */
    cleanup_store_pin obi_store_pin *pin = NULL;
    int r = obi_store_pin_new(s->opts->store, &pin, err);
    if (r == 0)
        r = obi_store_pin_hold_gc(pin, err);
    if (r == 0)
        r = obi_nar_ingest(s->opts->store->blobs, s->opts->store->directories, read_nar, &src, base,
                           &info->node, &info->nar, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    if (info->nar.size != claimed->nar_size ||
        memcmp(info->nar.sha256, claimed->nar_hash, OBI_SHA256_LEN) != 0) {
        cleanup_free char *got = obi_serve_nar_hash_string(info->nar.sha256);
        cleanup_free char *want = obi_serve_nar_hash_string(claimed->nar_hash);
        return obi_error_set(err, -EINVAL,
                             "%s: the NAR received (%s, %llu bytes) is not the one announced "
                             "(%s, %llu bytes)",
                             path, got ? got : "?", (unsigned long long)info->nar.size,
                             want ? want : "?", (unsigned long long)claimed->nar_size);
    }
    info->references = calloc(claimed->n_references + 1, sizeof *info->references);
    if (!info->references)
        return obi_error_oom(err);
    for (size_t i = 0; i < claimed->n_references; i++) {
        if (!(info->references[i] = strdup(claimed->references[i])))
            return obi_error_oom(err);
        info->n_references++;
    }
    if (claimed->ca[0] && !(info->ca = strdup(claimed->ca)))
        return obi_error_oom(err);
    r = obi_nix_path_info_record(s->opts->store, s->opts->path_infos, info, err);
    return r < 0 ? obi_error_prefix(err, r, "recording %s", path) : 0;
}

/* ---- the commands ---- */

static int cmd_query_valid_paths(serve_session *s, obi_error **err)
{
    bool lock, substitute;
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    int r = obi_serve_read_bool(s->in, "QueryValidPaths.lock", &lock, err);
    if (r >= 0)
        r = obi_serve_read_bool(s->in, "QueryValidPaths.substitute", &substitute, err);
    if (r >= 0)
        r = obi_serve_read_store_paths(s->in, "QueryValidPaths.paths", &paths, &n, err);
    if (r < 0)
        return r;
    /* lock (temporary GC roots) and substitute do not apply: nothing here is collected, and
     * there are no substituters */
    _cleanup_(obi_strv_builder_clear) obi_strv_builder valid = {0};
    for (size_t i = 0; i < n; i++) {
        cleanup_nix_path_info obi_nix_path_info *info = NULL;
        r = lookup(s, paths[i], &info, err);
        if (r < 0)
            return r;
        if (r > 0 && obi_strv_builder_add(&valid, paths[i]) < 0)
            return obi_error_oom(err);
    }
    return obi_serve_write_strings(s->out, valid.items, valid.n, err);
}

static int cmd_query_path_infos(serve_session *s, obi_error **err)
{
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    int r = obi_serve_read_store_paths(s->in, "QueryPathInfos.paths", &paths, &n, err);
    for (size_t i = 0; r >= 0 && i < n; i++) {
        cleanup_nix_path_info obi_nix_path_info *info = NULL;
        r = lookup(s, paths[i], &info, err);
        if (r <= 0)
            continue; /* unknown paths are left out, as Nix does */
        cleanup_serve_path_info obi_serve_path_info *entry = to_serve_info(info);
        r = entry ? obi_serve_write_path_info(s->out, s->client_version, entry, err)
                  : obi_error_oom(err);
    }
    return r < 0 ? r : obi_serve_write_string(s->out, "", err);
}

static int cmd_dump_store_path(serve_session *s, obi_error **err)
{
    cleanup_free char *path = NULL;
    int r = obi_serve_read_store_path(s->in, "DumpStorePath.path", &path, err);
    if (r < 0)
        return r;
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    r = lookup_valid(s, path, &info, err);
    return r < 0 ? r : write_nar(s, info, err);
}

static int cmd_import_paths(serve_session *s, obi_error **err)
{
    for (;;) {
        int r = obi_serve_read_import_marker(s->in, err);
        if (r <= 0) {
            if (r < 0)
                return r;
            break;
        }
        /* The path comes after its NAR: ingest under a placeholder name, rename when known. */
        cleanup_nix_path_info obi_nix_path_info *info = calloc(1, sizeof *info);
        if (!info)
            return obi_error_oom(err);
        nar_from_client src = {s->in, UINT64_MAX};
        /* gc held off from the first lookup until the record roots the node */
        cleanup_store_pin obi_store_pin *pin = NULL;
        r = obi_store_pin_new(s->opts->store, &pin, err);
        if (r == 0)
            r = obi_store_pin_hold_gc(pin, err);
        if (r == 0)
            r = obi_nar_ingest(s->opts->store->blobs, s->opts->store->directories, read_nar, &src,
                               "import", &info->node, &info->nar, err);
        if (r < 0)
            return obi_error_prefix(err, r, "ImportPaths");
        cleanup_serve_path_info obi_serve_path_info *trailer = NULL;
        r = obi_serve_read_export_trailer(s->in, &trailer, err);
        if (r < 0)
            return r;
        const char *base = strrchr(trailer->path, '/') + 1;
        if (obi_node_set_name(&info->node, base, strlen(base)) < 0 ||
            !(info->path = strdup(trailer->path)))
            return obi_error_oom(err);
        info->references = steal_pointer(&trailer->references);
        info->n_references = trailer->n_references;
        r = obi_nix_path_info_record(s->opts->store, s->opts->path_infos, info, err);
        if (r < 0)
            return obi_error_prefix(err, r, "ImportPaths: recording %s", trailer->path);
    }
    return obi_serve_write_u64(s->out, 1, err);
}

/* References nest at most this deep in one ExportPaths (the walk below recurses). */
#define EXPORT_MAX_DEPTH 4096

/* Appends path and, first, the paths of set it references (depth-first), each once: the order
 * Nix's export uses, so an importer meets references before the paths that need them. */
static int topo_visit(serve_session *s, char **set, size_t n, const char *path, bool *done,
                      obi_nix_path_info **order, size_t *n_order, unsigned depth, obi_error **err)
{
    size_t index = n;
    for (size_t i = 0; i < n && index == n; i++)
        if (strcmp(set[i], path) == 0)
            index = i;
    if (index == n || done[index])
        return 0;
    if (depth > EXPORT_MAX_DEPTH)
        return obi_error_set(err, -ELOOP, "%s: references nest deeper than %d", path,
                             EXPORT_MAX_DEPTH);
    done[index] = true;
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    int r = lookup_valid(s, path, &info, err);
    for (size_t i = 0; r >= 0 && i < info->n_references; i++)
        if (strcmp(info->references[i], path) != 0)
            r = topo_visit(s, set, n, info->references[i], done, order, n_order, depth + 1, err);
    if (r < 0)
        return r;
    order[(*n_order)++] = steal_pointer(&info);
    return 0;
}

static int cmd_export_paths(serve_session *s, obi_error **err)
{
    uint64_t obsolete;
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    int r = obi_serve_read_u64(s->in, "ExportPaths.sign", &obsolete, err);
    if (r >= 0)
        r = obi_serve_read_store_paths(s->in, "ExportPaths.paths", &paths, &n, err);
    if (r < 0)
        return r;
    cleanup_free bool *done = calloc(n + 1, sizeof *done);
    cleanup_free obi_nix_path_info **order = calloc(n + 1, sizeof *order);
    if (!done || !order)
        return obi_error_oom(err);
    size_t n_order = 0;
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = topo_visit(s, paths, n, paths[i], done, order, &n_order, 0, err);
    for (size_t i = 0; r >= 0 && i < n_order; i++) {
        cleanup_serve_path_info obi_serve_path_info *entry = to_serve_info(order[i]);
        r = entry ? obi_serve_write_u64(s->out, 1, err) : obi_error_oom(err);
        if (r >= 0)
            r = write_nar(s, order[i], err);
        if (r >= 0)
            r = obi_serve_write_export_trailer(s->out, entry, err);
    }
    for (size_t i = 0; i < n_order; i++)
        obi_nix_path_info_free(order[i]);
    return r < 0 ? r : obi_serve_write_u64(s->out, 0, err);
}

static int cmd_build_paths(serve_session *s, obi_error **err)
{
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    obi_serve_build_options options;
    int r = obi_serve_read_build_paths(s->in, s->client_version, &paths, &n, &options, err);
    if (r < 0)
        return r;
    /* Nix answers a failed BuildPaths with its exit status (1) and the message */
    r = obi_serve_write_u64(s->out, 1, err);
    if (r >= 0)
        r = obi_serve_write_string(s->out,
                                   "ocibuild remote-builder builds derivations sent with "
                                   "BuildDerivation (as Nix's build hook and Hydra do), not "
                                   "BuildPaths",
                                   err);
    return r;
}

static int cmd_query_closure(serve_session *s, obi_error **err)
{
    bool include_outputs;
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    int r = obi_serve_read_bool(s->in, "QueryClosure.includeOutputs", &include_outputs, err);
    if (r >= 0)
        r = obi_serve_read_store_paths(s->in, "QueryClosure.paths", &paths, &n, err);
    /* breadth-first over the references; the closure grows as it is walked. includeOutputs
     * does not apply: .drv files are not kept here, only outputs and sources. */
    _cleanup_(obi_strv_builder_clear) obi_strv_builder closure = {0};
    for (size_t i = 0; r >= 0 && i < n; i++)
        if (!obi_strv_builder_contains(&closure, paths[i]) &&
            obi_strv_builder_add(&closure, paths[i]) < 0)
            return obi_error_oom(err);
    for (size_t i = 0; r >= 0 && i < closure.n; i++) {
        cleanup_nix_path_info obi_nix_path_info *info = NULL;
        r = lookup_valid(s, closure.items[i], &info, err);
        for (size_t k = 0; r >= 0 && k < info->n_references; k++)
            if (!obi_strv_builder_contains(&closure, info->references[k]) &&
                obi_strv_builder_add(&closure, info->references[k]) < 0)
                return obi_error_oom(err);
    }
    if (r < 0)
        return r;
    obi_strv_builder_sort_unique(&closure);
    return obi_serve_write_strings(s->out, closure.items, closure.n, err);
}

static obi_serve_build_status status_of(int code)
{
    switch (code) {
    case OBI_EBUILD_FAILED:
        return OBI_SERVE_PERMANENT_FAILURE;
    case -ETIMEDOUT:
        return OBI_SERVE_TIMED_OUT;
    case -ENOENT: /* an input that was not sent */
        return OBI_SERVE_DEPENDENCY_FAILED;
    case -ENOTSUP:
        return OBI_SERVE_INPUT_REJECTED;
    default:
        return OBI_SERVE_MISC_FAILURE;
    }
}

/* ---- watching a build: the client's hangup and build options ---- */

/* While a build runs nobody reads the client's stream, so a thread watches it for a hangup
 * (the client, or ssh, went away; Nix's opServe has MonitorFdHup for the same) and for the
 * client's build options: build-timeout, max-silent-time (no log output for that long) and
 * max-log-size (counted as the log streams to stderr). The first of these to happen makes the
 * build's cancel fd readable, so the builder kills and removes the container, and is what the
 * BuildResult reports. Only hangups are watched, not data: a client that sends early cancels
 * nothing. */
typedef enum watch_reason {
    WATCH_NONE,
    WATCH_HANGUP,
    WATCH_TIMEOUT,
    WATCH_SILENCE,
    WATCH_LOG_LIMIT,
} watch_reason;

typedef struct build_watch {
    int in_fd;
    obi_serve_build_options options;
    int stop[2];   /* written to end the watch */
    int cancel[2]; /* [0]: the build's cancel fd */
    time_t started_at;
    _Atomic time_t last_output;
    _Atomic uint64_t log_bytes;
    _Atomic int reason; /* watch_reason: the first one wins */
    pthread_t thread;
    bool started;
} build_watch;

static void watch_cancel(build_watch *w, watch_reason reason)
{
    int none = WATCH_NONE;
    if (atomic_compare_exchange_strong(&w->reason, &none, (int)reason)) {
        ssize_t n = write(w->cancel[1], "x", 1);
        (void)n; /* a full pipe is readable already */
    }
}

/* The build's log: to stderr (ssh carries it to the client's log), counted and timed. */
static void watch_output(const uint8_t *data, size_t len, void *ctx)
{
    build_watch *w = ctx;
    for (size_t done = 0; done < len;) {
        ssize_t n = write(STDERR_FILENO, data + done, len - done);
        if (n <= 0)
            break; /* nowhere to write it: still counted below */
        done += (size_t)n;
    }
    atomic_store(&w->last_output, time(NULL));
    uint64_t total = atomic_fetch_add(&w->log_bytes, len) + len;
    if (w->options.max_log_size && total > w->options.max_log_size)
        watch_cancel(w, WATCH_LOG_LIMIT);
}

static void *watch_run(void *arg)
{
    build_watch *w = arg;
    bool timed = w->options.build_timeout || w->options.max_silent_time;
    struct pollfd fds[2] = {{w->in_fd, POLLRDHUP, 0}, {w->stop[0], POLLIN, 0}};
    for (;;) {
        int n = poll(fds, 2, timed ? 1000 : -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || fds[1].revents)
            return NULL;
        if (fds[0].revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) {
            watch_cancel(w, WATCH_HANGUP);
            return NULL;
        }
        time_t now = time(NULL);
        if (w->options.build_timeout &&
            (uint64_t)(now - w->started_at) >= w->options.build_timeout) {
            watch_cancel(w, WATCH_TIMEOUT);
            return NULL;
        }
        if (w->options.max_silent_time &&
            (uint64_t)(now - atomic_load(&w->last_output)) >= w->options.max_silent_time) {
            watch_cancel(w, WATCH_SILENCE);
            return NULL;
        }
    }
}

static void build_watch_stop(build_watch *w)
{
    if (w->started) {
        ssize_t n = write(w->stop[1], "x", 1);
        (void)n;
        pthread_join(w->thread, NULL);
    }
    for (int i = 0; i < 2; i++) {
        if (w->stop[i] >= 0)
            close(w->stop[i]);
        if (w->cancel[i] >= 0)
            close(w->cancel[i]);
    }
}

static int build_watch_start(build_watch *w, int in_fd, const obi_serve_build_options *options,
                             obi_error **err)
{
    memset(w, 0, sizeof *w);
    w->in_fd = in_fd;
    w->options = *options;
    w->stop[0] = w->stop[1] = w->cancel[0] = w->cancel[1] = -1;
    w->started_at = time(NULL);
    atomic_init(&w->last_output, w->started_at);
    atomic_init(&w->log_bytes, 0);
    atomic_init(&w->reason, WATCH_NONE);
    if (pipe2(w->stop, O_CLOEXEC) < 0 || pipe2(w->cancel, O_CLOEXEC | O_NONBLOCK) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    int r = pthread_create(&w->thread, NULL, watch_run, w);
    if (r != 0)
        return obi_error_set_errno(err, r, "a thread watching the build");
    w->started = true;
    return 0;
}

/* When the watch cancelled the build: the status and a message saying why, before the
 * builder's own. */
static obi_serve_build_status watch_outcome(build_watch *w, obi_error **build_err)
{
    const obi_serve_build_options *o = &w->options;
    switch ((watch_reason)atomic_load(&w->reason)) {
    case WATCH_TIMEOUT:
        obi_error_prefix(build_err, -ETIMEDOUT,
                         "timed out after %llu s (the client's build-timeout)",
                         (unsigned long long)o->build_timeout);
        return OBI_SERVE_TIMED_OUT;
    case WATCH_SILENCE:
        obi_error_prefix(build_err, -ETIMEDOUT,
                         "no log output for %llu s (the client's max-silent-time)",
                         (unsigned long long)o->max_silent_time);
        return OBI_SERVE_TIMED_OUT;
    case WATCH_LOG_LIMIT:
        obi_error_prefix(build_err, -EFBIG,
                         "the build log passed %llu bytes (the client's max-build-log-size)",
                         (unsigned long long)o->max_log_size);
        return OBI_SERVE_LOG_LIMIT_EXCEEDED;
    case WATCH_HANGUP:
        obi_error_prefix(build_err, -ECANCELED, "the client went away");
        return OBI_SERVE_MISC_FAILURE;
    case WATCH_NONE:
    default:
        return OBI_SERVE_MISC_FAILURE;
    }
}

/* 1 when every output of drv is valid here already. */
static int outputs_valid(serve_session *s, const obi_derivation *drv, obi_error **err)
{
    for (size_t i = 0; i < drv->n_outputs; i++) {
        cleanup_nix_path_info obi_nix_path_info *info = NULL;
        int r = lookup(s, drv->outputs[i].path, &info, err);
        if (r <= 0)
            return r;
    }
    return 1;
}

static int cmd_build_derivation(serve_session *s, obi_error **err)
{
    cleanup_serve_build_request obi_serve_build_request *req = NULL;
    int r = obi_serve_read_build_derivation(s->in, s->client_version, &req, err);
    if (r < 0)
        return r;
    obi_serve_build_result result = {.status = OBI_SERVE_BUILT, .start_time = time(NULL)};
    r = outputs_valid(s, req->drv, err);
    if (r < 0)
        return r;
    cleanup_error obi_error *build_err = NULL;
    if (r > 0) {
        result.status = OBI_SERVE_ALREADY_VALID;
    } else {
        _cleanup_(build_watch_stop) build_watch watch;
        r = build_watch_start(&watch, s->in_fd, &req->options, err);
        if (r < 0)
            return r;
        obi_build_call call = {watch.cancel[0], watch_output, &watch};
        obi_nix_build_options opts = {
            .store = s->opts->store,
            .builder = s->opts->builder,
            .path_infos = s->opts->path_infos,
            .build_cores = s->opts->build_cores,
            .own_store_only = true,
            .call = &call,
        };
        cleanup_nix_build_result obi_nix_build_result *built = NULL;
        r = obi_nix_build_derivation(req->drv_path, req->drv, &opts, &built, &build_err);
        if (r == -ECANCELED && atomic_load(&watch.reason) != WATCH_NONE)
            result.status = watch_outcome(&watch, &build_err);
        else if (r < 0)
            result.status = status_of(r);
        else
            result.times_built = 1;
    }
    result.stop_time = time(NULL);
    result.error_msg = build_err ? build_err->message : (char *)"";
    r = obi_serve_write_build_result(s->out, s->client_version, &result, err);
    result.error_msg = NULL; /* borrowed */
    obi_serve_build_result_clear(&result);
    return r;
}

static int cmd_add_to_store_nar(serve_session *s, obi_error **err)
{
    cleanup_serve_path_info obi_serve_path_info *info = NULL;
    int r = obi_serve_read_add_to_store_nar(s->in, &info, err);
    if (r < 0)
        return r;
    r = ingest_path(s, info, err);
    if (r < 0)
        return obi_error_prefix(err, r, "AddToStoreNar");
    return obi_serve_write_u64(s->out, 1, err); /* success */
}

typedef struct serve_command {
    obi_serve_command number;
    const char *name;
    bool writes; /* needs --write */
    int (*run)(serve_session *s, obi_error **err);
} serve_command;

static const serve_command COMMANDS[] = {
    {OBI_SERVE_QUERY_VALID_PATHS, "QueryValidPaths", false, cmd_query_valid_paths},
    {OBI_SERVE_QUERY_PATH_INFOS, "QueryPathInfos", false, cmd_query_path_infos},
    {OBI_SERVE_DUMP_STORE_PATH, "DumpStorePath", false, cmd_dump_store_path},
    {OBI_SERVE_IMPORT_PATHS, "ImportPaths", true, cmd_import_paths},
    {OBI_SERVE_EXPORT_PATHS, "ExportPaths", false, cmd_export_paths},
    {OBI_SERVE_BUILD_PATHS, "BuildPaths", true, cmd_build_paths},
    {OBI_SERVE_QUERY_CLOSURE, "QueryClosure", false, cmd_query_closure},
    {OBI_SERVE_BUILD_DERIVATION, "BuildDerivation", true, cmd_build_derivation},
    {OBI_SERVE_ADD_TO_STORE_NAR, "AddToStoreNar", true, cmd_add_to_store_nar},
};

int obi_nix_serve(int in_fd, int out_fd, const obi_nix_serve_options *opts, obi_error **err)
{
    cleanup_serve_reader obi_serve_reader *in = NULL;
    cleanup_serve_writer obi_serve_writer *out = NULL;
    int r = obi_serve_reader_new_fd(in_fd, &in, err);
    if (r >= 0)
        r = obi_serve_writer_new_fd(out_fd, &out, err);
    if (r < 0)
        return r;
    serve_session s = {opts, in, out, 0, in_fd};
    r = obi_serve_handshake(in, out, &s.client_version, err);
    if (r < 0)
        return r;
    for (;;) {
        uint64_t number;
        obi_serve_reader_set_budget(in, OBI_SERVE_REQUEST_BUDGET);
        r = obi_serve_read_command(in, &number, err);
        if (r <= 0)
            return r; /* 0: the client is done */
        const serve_command *cmd = NULL;
        for (size_t i = 0; i < OBI_ARRAY_SIZE(COMMANDS) && !cmd; i++)
            if (COMMANDS[i].number == number)
                cmd = &COMMANDS[i];
        if (!cmd)
            return obi_error_set(err, -EINVAL, "serve: unknown command %llu",
                                 (unsigned long long)number);
        if (cmd->writes && !opts->write_allowed)
            return obi_error_set(err, -EPERM, "serve: %s needs write access (--write)", cmd->name);
        r = cmd->run(&s, err);
        if (r >= 0)
            r = obi_serve_writer_flush(out, err);
        if (r < 0)
            return obi_error_prefix(err, r, "serve: %s", cmd->name);
    }
}
