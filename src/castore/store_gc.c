/*
 * The garbage collector (include/ocibuild/store_gc.h) and the usage report of an on-disk
 * store. Marking keeps two sets (digest maps, one entry per live object) and a queue of
 * directories to open; each directory is read once however many roots reach it. Sweeping
 * lists what the services store and removes what is not marked, through the services' remove
 * operations, directories before blobs.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "ocibuild/digest_map.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/store_gc.h"
#include "ocibuild/store_roots.h"
#include "store_internal.h"

#define LIVE ((void *)1)

struct obi_store_gc {
    obi_store *store;
    int lock_fd; /* ROOT/gc.lock, exclusive */
    obi_digest_map live_blobs, live_directories;
    obi_digest *queue; /* directories to open */
    size_t n_queue, queue_capacity;
    obi_store_gc_stats marked;
};

static void no_free(void *value)
{
    (void)value;
}

/* ---- mark ---- */

static int queue_directory(obi_store_gc *gc, const obi_digest *digest, obi_error **err)
{
    if (obi_digest_map_get(&gc->live_directories, digest))
        return 0;
    if (gc->n_queue == gc->queue_capacity) {
        size_t capacity = gc->queue_capacity ? 2 * gc->queue_capacity : 64;
        obi_digest *grown = realloc(gc->queue, capacity * sizeof *grown);
        if (!grown)
            return obi_error_oom(err);
        gc->queue = grown;
        gc->queue_capacity = capacity;
    }
    gc->queue[gc->n_queue++] = *digest;
    return 0;
}

static int mark_blob(obi_store_gc *gc, const obi_digest *digest, obi_error **err)
{
    int r = obi_digest_map_insert(&gc->live_blobs, digest, LIVE);
    if (r < 0)
        return obi_error_oom(err);
    if (r == 1 && obi_blob_has(gc->store->blobs, digest, NULL) != 1)
        gc->marked.missing++;
    return 0;
}

static int mark_root(const obi_store_root *root, void *ctx, obi_error **err)
{
    obi_store_gc *gc = ctx;
    gc->marked.roots++;
    for (size_t i = 0; i < root->n_refs; i++) {
        const obi_store_ref *ref = &root->refs[i];
        int r = ref->kind == OBI_STORE_BLOB ? mark_blob(gc, &ref->digest, err)
                                            : queue_directory(gc, &ref->digest, err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Opens queued directories until none is left, marking them and what they name. */
static int mark_closures(obi_store_gc *gc, obi_error **err)
{
    while (gc->n_queue > 0) {
        obi_digest digest = gc->queue[--gc->n_queue];
        int inserted = obi_digest_map_insert(&gc->live_directories, &digest, LIVE);
        if (inserted < 0)
            return obi_error_oom(err);
        if (inserted == 0)
            continue;
        cleanup_directory obi_directory *dir = NULL;
        cleanup_error obi_error *get_err = NULL;
        int r = obi_directory_get(gc->store->directories, &digest, &dir, &get_err);
        if (r == -ENOENT) {
            gc->marked.missing++;
            continue; /* nothing below it can be found either */
        }
        if (r < 0) {
            obi_error_move(err, &get_err);
            return obi_error_prefix(err, r,
                                    "a live directory is damaged, so what it keeps is unknown "
                                    "(`ocibuild store verify` names it)");
        }
        for (size_t i = 0; i < dir->n_directories; i++)
            if ((r = queue_directory(gc, &dir->directories[i].digest, err)) < 0)
                return r;
        for (size_t i = 0; i < dir->n_files; i++)
            if ((r = mark_blob(gc, &dir->files[i].digest, err)) < 0)
                return r;
    }
    return 0;
}

int obi_store_gc_begin(obi_store *store, obi_store_gc **out, obi_error **err)
{
    if (!store->local_root)
        return obi_error_set(err, -ENOTSUP,
                             "gc: only an on-disk store can be collected here (collect a "
                             "remote store on the machine that serves it)");
    obi_store_gc *gc = calloc(1, sizeof *gc);
    if (!gc)
        return obi_error_oom(err);
    gc->store = store;
    gc->lock_fd = -1;
    obi_digest_map_init(&gc->live_blobs, no_free);
    obi_digest_map_init(&gc->live_directories, no_free);
    cleanup_store_gc obi_store_gc *owned = gc;
    int r = obi_store_gc_lock(store->local_root, LOCK_EX, &gc->lock_fd, err);
    if (r == 0)
        r = obi_store_roots_list(store, true, true, mark_root, gc, err);
    if (r == 0)
        r = mark_closures(gc, err);
    if (r < 0)
        return obi_error_prefix(err, r, "gc %s", store->local_root);
    gc->marked.live_blobs = gc->live_blobs.count;
    gc->marked.live_directories = gc->live_directories.count;
    *out = steal_pointer(&owned);
    return 0;
}

bool obi_store_gc_is_live(const obi_store_gc *gc, obi_store_object_kind kind,
                          const obi_digest *digest)
{
    const obi_digest_map *live = kind == OBI_STORE_BLOB ? &gc->live_blobs : &gc->live_directories;
    return obi_digest_map_get(live, digest) != NULL;
}

void obi_store_gc_end(obi_store_gc *gc)
{
    if (!gc)
        return;
    if (gc->lock_fd >= 0)
        close(gc->lock_fd);
    obi_digest_map_clear(&gc->live_blobs);
    obi_digest_map_clear(&gc->live_directories);
    free(gc->queue);
    free(gc);
}

/* ---- sweep ---- */

typedef struct sweeper {
    obi_store_gc *gc;
    const obi_store_gc_options *options;
    obi_store_gc_stats *stats;
    obi_digest *dead; /* directories to remove */
    size_t n_dead, dead_capacity;
} sweeper;

static int collect_directory(const obi_digest *digest, void *ctx, obi_error **err)
{
    sweeper *s = ctx;
    if (obi_digest_map_get(&s->gc->live_directories, digest))
        return 0;
    if (s->n_dead == s->dead_capacity) {
        size_t capacity = s->dead_capacity ? 2 * s->dead_capacity : 64;
        obi_digest *grown = realloc(s->dead, capacity * sizeof *grown);
        if (!grown)
            return obi_error_oom(err);
        s->dead = grown;
        s->dead_capacity = capacity;
    }
    s->dead[s->n_dead++] = *digest;
    return 0;
}

/* The bytes a directory's row holds (dry run: nothing is removed to measure it). */
static uint64_t directory_bytes(obi_directory_service *directories, const obi_digest *digest)
{
    cleanup_directory obi_directory *dir = NULL;
    if (obi_directory_get(directories, digest, &dir, NULL) < 0)
        return 0;
    obi_encoded_directory *encoded = NULL;
    obi_digest ignored;
    if (obi_encoded_directory_new(dir, &encoded, &ignored, NULL) < 0)
        return 0;
    uint64_t len = encoded->len;
    obi_encoded_directory_free(encoded);
    return len;
}

static int sweep_directories(sweeper *s, obi_error **err)
{
    obi_directory_service *directories = s->gc->store->directories;
    int r = obi_directory_service_list(directories, collect_directory, s, err);
    if (r < 0)
        return r;
    /* each one's size is measured before it goes when someone wants it line by line */
    bool measure = s->options->dry_run || s->options->on_remove;
    for (size_t i = 0; measure && i < s->n_dead; i++) {
        uint64_t bytes = directory_bytes(directories, &s->dead[i]);
        s->stats->bytes_freed += bytes;
        if (s->options->on_remove && (r = s->options->on_remove(OBI_STORE_DIRECTORY, &s->dead[i],
                                                                bytes, s->options->ctx, err)) < 0)
            return r;
    }
    if (!s->options->dry_run) {
        uint64_t freed = 0;
        r = obi_directory_service_remove(directories, s->dead, s->n_dead, &freed, err);
        if (r < 0)
            return r;
        if (!measure)
            s->stats->bytes_freed += freed;
    }
    s->stats->directories_removed = s->n_dead;
    return 0;
}

/* The blob's file (NULL when the backend has none); caller frees. */
static char *blob_file(obi_blob_service *blobs, const obi_digest *digest)
{
    char *path = NULL;
    return obi_blob_local_path(blobs, digest, &path, NULL) < 0 ? NULL : path;
}

/* What removing a blob would free: its size when no other link keeps the file. */
static uint64_t blob_bytes(obi_blob_service *blobs, const obi_digest *digest)
{
    cleanup_free char *path = blob_file(blobs, digest);
    struct stat st;
    if (!path || lstat(path, &st) < 0)
        return 0;
    return st.st_nlink == 1 ? (uint64_t)st.st_size : 0;
}

static int sweep_blob(const obi_digest *digest, void *ctx, obi_error **err)
{
    sweeper *s = ctx;
    if (obi_digest_map_get(&s->gc->live_blobs, digest))
        return 0;
    if (s->options->max_freed && s->stats->bytes_freed >= s->options->max_freed)
        return 0;
    obi_blob_service *blobs = s->gc->store->blobs;
    uint64_t bytes = 0;
    int r = 0;
    if (s->options->dry_run)
        bytes = blob_bytes(blobs, digest);
    else
        r = obi_blob_service_remove(blobs, digest, &bytes, err);
    if (r < 0)
        return r;
    s->stats->bytes_freed += bytes;
    s->stats->blobs_removed++;
    return s->options->on_remove
               ? s->options->on_remove(OBI_STORE_BLOB, digest, bytes, s->options->ctx, err)
               : 0;
}

int obi_store_gc_sweep(obi_store_gc *gc, const obi_store_gc_options *options,
                       obi_store_gc_stats *stats, obi_error **err)
{
    *stats = gc->marked;
    sweeper s = {gc, options, stats, NULL, 0, 0};
    int r = sweep_directories(&s, err);
    free(s.dead);
    if (r == 0)
        r = obi_blob_service_list(gc->store->blobs, sweep_blob, &s, err);
    return r < 0 ? obi_error_prefix(err, r, "gc %s", gc->store->local_root) : 0;
}

/* ---- usage ---- */

typedef struct usage_counter {
    obi_store *store;
    obi_store_usage *usage;
} usage_counter;

static int count_blob(const obi_digest *digest, void *ctx, obi_error **err)
{
    usage_counter *c = ctx;
    (void)err;
    cleanup_free char *path = blob_file(c->store->blobs, digest);
    struct stat st;
    c->usage->blobs++;
    if (path && lstat(path, &st) == 0)
        c->usage->blob_bytes += (uint64_t)st.st_size;
    return 0;
}

static int count_directory(const obi_digest *digest, void *ctx, obi_error **err)
{
    (void)digest;
    (void)err;
    ((usage_counter *)ctx)->usage->directories++;
    return 0;
}

static int count_root(const obi_store_root *root, void *ctx, obi_error **err)
{
    (void)err;
    obi_store_usage *usage = ((usage_counter *)ctx)->usage;
    if (root->pin)
        usage->pins++;
    else
        usage->roots++;
    return 0;
}

/* Regular files directly in dir: how many, and their bytes. */
static void count_files(const char *dir, uint64_t *files, uint64_t *bytes)
{
    cleanup_dir DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
            (*files)++;
            *bytes += (uint64_t)st.st_size;
        }
    }
}

int obi_store_usage_get(obi_store *store, obi_store_usage *usage, obi_error **err)
{
    *usage = (obi_store_usage){0};
    if (!store->local_root)
        return obi_error_set(err, -ENOTSUP, "du: only an on-disk store can be measured here");
    usage_counter counter = {store, usage};
    int r = obi_blob_service_list(store->blobs, count_blob, &counter, err);
    if (r == 0)
        r = obi_directory_service_list(store->directories, count_directory, &counter, err);
    if (r == 0)
        r = obi_store_roots_list(store, true, false, count_root, &counter, err);
    if (r < 0)
        return obi_error_prefix(err, r, "du %s", store->local_root);
    static const char *const database_files[] = {"directories.sqlite", "directories.sqlite-wal",
                                                 "directories.sqlite-shm"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(database_files); i++) {
        cleanup_free char *path = obi_path_join(store->local_root, database_files[i]);
        struct stat st;
        if (path && stat(path, &st) == 0)
            usage->directory_bytes += (uint64_t)st.st_size;
    }
    cleanup_free char *tmp = obi_path_join(store->local_root, "tmp");
    if (tmp)
        count_files(tmp, &usage->temp_files, &usage->temp_bytes);
    return 0;
}

int obi_store_available_bytes(obi_store *store, uint64_t *out, obi_error **err)
{
    if (!store->local_root)
        return obi_error_set(err, -ENOTSUP, "the store is not on this machine's disk");
    struct statvfs st;
    if (statvfs(store->local_root, &st) < 0)
        return obi_error_set_errno(err, errno, "statvfs %s", store->local_root);
    *out = (uint64_t)st.f_bavail * st.f_frsize;
    return 0;
}
